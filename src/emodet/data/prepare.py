"""Data for one experiment: manifest rows (given, or parsed from the data root), labels, the split, and a complete
feature cache (with the training recordings' speed and ``training.augment.waveform`` copies when asked).

    data = prepare_data(cfg, run_dir)       # PreparedData: rows with a split, labels, cache, skipped files
    normalizer = fit_normalizer(cfg, data)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, check_data_root
from ..core.errors import UsageError
from ..core.files import list_audio_files
from ..core.io import atomic_write_csv
from ..features import load_plugins
from .augment import AugmentCopy
from .cache import FeatureCache, file_signature
from .checks import check_babble_pool, warn_about_data
from .corpora import CORPUS_NAMES, prepare_corpus
from .dataset import locate, row_cache
from .labels import CANONICAL_LABELS, load_label_map
from .manifest import read_manifest, resolve_path, write_manifest
from .normalize import Normalizer, check_nap, check_whiten
from .splits import assign_splits

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    rows: list
    root: Path | None
    manifest_path: Path | None
    labels: list
    cache: FeatureCache
    skipped: list
    augmented: list = field(default_factory=list)  # augmented copies of training rows (a ``variant`` key each)
    variant_caches: dict = field(default_factory=dict)  # variant (speed0.9, aug1) -> FeatureCache of its features

    def load(self, row: dict):
        """Cached features of a row (a perturbed copy's from its factor's cache)."""
        return row_cache(row, self.cache, self.variant_caches).load(*locate(row["path"], self.root, self.manifest_path))

    def split(self, name: str) -> list[dict]:
        return [r for r in self.rows if r.get("split") == name]


def load_rows(cfg: Config) -> tuple[list[dict], Path | None, Path | None]:
    """``(rows, manifest path or None, data root or None)``: ``data.manifest`` as written, else the corpus
    under ``data.root`` parsed with ``data.corpus``; only rows of ``data.labels`` (when set) are kept."""
    d = cfg.data
    root = check_data_root(cfg)
    if d.manifest:
        manifest_path = Path(d.manifest)
        rows = read_manifest(manifest_path)
        check_manifest_files(rows, root, manifest_path)
    else:
        result = prepare_corpus(d.corpus, root, load_label_map(d.label_map), None, d.speaker_pattern)
        if not result.rows:
            raise UsageError(f"data.root {root}: no file parsed as corpus {result.corpus!r}; set data.corpus "
                             f"({', '.join(CORPUS_NAMES)})")
        rows, manifest_path = result.rows, None
        for item in result.failed:
            log.info("  not parsed: %s: %s", item["path"], item["reason"])
    if d.labels:
        unknown = [lab for lab in d.labels if lab not in {r["label"] for r in rows}]
        if unknown:
            raise UsageError(f"data.labels: no recording has label {unknown[0]!r}; labels in the data: "
                             f"{', '.join(sorted({r['label'] for r in rows}))}")
        outside = sum(1 for r in rows if r["label"] not in d.labels)
        if outside:
            log.info("  %d recording(s) with labels outside data.labels (%s) left out", outside, ", ".join(d.labels))
        rows = [r for r in rows if r["label"] in d.labels]
    return rows, manifest_path, root


def check_manifest_files(rows: list[dict], root: Path | None, manifest_path: Path) -> None:
    """Every file a manifest names exists; else an error with one missing file and what to pass."""
    missing = [r["path"] for r in rows if not resolve_path(r["path"], root, manifest_path).is_file()]
    if not missing:
        return
    where = f"data.root {root}" if root is not None else f"the manifest's own folder {manifest_path.parent}"
    hint = ("pass --data-root DIR: the folder `emodet data prepare --root` was given, which a single corpus's "
            "paths are relative to" if root is None else "check --data-root")
    raise UsageError(f"manifest {manifest_path}: {len(missing)} of {len(rows)} files not found under {where} "
                     f"(e.g. {missing[0]}); {hint}")


def label_order(rows: list[dict]) -> list[str]:
    """The labels of ``rows``: canonical ones in the canonical order, then a user's own, sorted."""
    return sorted({r["label"] for r in rows},
                  key=lambda x: (CANONICAL_LABELS.index(x) if x in CANONICAL_LABELS else 99, x))


def apply_split(cfg: Config, rows: list[dict], manifest_path: Path | None) -> None:
    """Give every row a ``split`` (in place) as ``data.split.method`` says: ``auto`` keeps a manifest's own
    split column and splits by speaker otherwise; ``speaker`` always re-splits (said when it replaces one);
    ``manifest`` needs the manifest's split."""
    s = cfg.data.split
    has_split = any(r.get("split") for r in rows)
    if s.method == "manifest" and not has_split:
        raise UsageError(f"data.split.method manifest: {manifest_path or 'the data'} has no split column; "
                         "write one with `emodet data split` or set data.split.method: auto")
    if has_split and s.method in ("auto", "manifest"):
        log.info("  using the split of %s as it is (data.split.method: %s)", manifest_path, s.method)
        return
    if has_split:
        log.info("  data.split.method speaker: %s's own split column replaced by a new split by speaker "
                 "(val %s, test %s, seed %s); set data.split.method: auto to keep it", manifest_path, s.val, s.test,
                 s.seed)
    assign_splits(rows, s.val, s.test, folds=None, seed=s.seed)


def build_features(cache: FeatureCache, rows: list[dict], root: Path | None, manifest_path: Path | None,
                   plugins=(), progress: bool | None = None) -> tuple[list[dict], list[dict]]:
    """Fill ``cache`` for ``rows``; returns ``(rows whose features exist, failures {path, error})``."""
    failed, by_base = [], defaultdict(list)
    for r in rows:
        base, rel = locate(r["path"], root, manifest_path)
        by_base[base].append(rel)
    for base, rels in by_base.items():
        failed += cache.build(base, rels, progress=progress, plugins=plugins).failed
    bad = {s["path"] for s in failed}
    return [r for r in rows if locate(r["path"], root, manifest_path)[1] not in bad], failed


def build_copies(variants: dict, rows: list[dict], root, manifest_path, plugins, progress, of: str = "") -> list[dict]:
    """Each variant's copy of ``rows`` (``variant``, and ``speed`` for a speed copy); one that fails is said."""
    copies = []
    for name, variant in variants.items():
        kept, failed = build_features(variant, rows, root, manifest_path, plugins, progress)
        copies += [{**r, "variant": name, **({"speed": variant.speed} if variant.speed else {})} for r in kept]
        for s in failed:
            log.info("  no %s copy%s: %s", name, of, s["error"])
    return copies


def prepare_data(cfg: Config, run_dir: Path | None = None, progress: bool | None = None) -> PreparedData:
    """Rows, labels and split, and a complete feature cache; with ``run_dir``, ``manifest.csv`` (the split used)
    and ``skipped.csv`` (files whose features could not be computed) are written there."""
    load_plugins(cfg.features.plugins)
    rows, manifest_path, root = load_rows(cfg)
    labels = list(cfg.data.labels or label_order(rows))
    apply_split(cfg, rows, manifest_path)
    es = cfg.training.early_stopping
    warn_about_data(rows, labels, selects_on_val=es.select == "best" or es.patience > 0)

    def new_cache(speed=None, augment=None) -> FeatureCache:
        f = cfg.features
        return FeatureCache(f.cache_dir, f.type, f.params, sr=cfg.data.sample_rate, speed=speed, augment=augment)

    check_babble_pool(cfg.training.augment.waveform, rows)  # before the (maybe long) feature pass
    check_nap(cfg.data.nap, len({r["speaker"] for r in rows if r.get("split") == "train"}))
    check_whiten(cfg.data.whiten, cfg.data.normalize)
    cache = new_cache()
    rows, skipped = build_features(cache, rows, root, manifest_path, cfg.features.plugins, progress)
    for s in skipped:
        log.info("  skipped: %s", s["error"])
    train = [r for r in rows if r.get("split") == "train"]
    variants = {f"speed{f:g}": new_cache(speed=f) for f in cfg.training.augment.speed}
    waveform = cfg.training.augment.waveform
    if waveform.copies:
        spec, talkers = waveform.to_dict(), ()
        if waveform.babble_from == "training":  # resolved, as the cache names the file it augments
            paths = [resolve_path(r["path"], root, manifest_path).resolve() for r in train]
            talkers = tuple(sorted((str(p), r["speaker"], file_signature(p)) for p, r in zip(paths, train)))
        variants.update({f"aug{k}": new_cache(augment=AugmentCopy(spec, k, cfg.training.seed, talkers))
                         for k in range(waveform.copies)})
    augmented = build_copies(variants, train, root, manifest_path, cfg.features.plugins, progress)  # a group each
    if run_dir is not None:
        # paths relative to a manifest's own folder (no data root) must still name the files from the run's
        write_manifest(run_dir / "manifest.csv", rows, moved_from=manifest_path if root is None else None)
        if skipped:
            atomic_write_csv(run_dir / "skipped.csv", skipped, ["path", "error"])
    return PreparedData(rows, root, manifest_path, labels, cache, skipped, augmented, variants)


def check_unlabelled(cfg: Config) -> None:
    """``training.distill.unlabelled``: recordings only a teacher labels (the student learns them from its
    outputs alone); what cannot work with label-free recordings is refused before any data is read."""
    t, d = cfg.training, cfg.data
    copies, most = t.distill.unlabelled_copies, t.augment.waveform.copies
    if copies < 0 or (t.distill.unlabelled and copies > most):
        raise UsageError(f"training.distill.unlabelled_copies {copies}: augmented copies of the unlabelled recordings "
                         f"are the first of training.augment.waveform's {most} copies: 0 to {most}")
    if not t.distill.unlabelled:
        if copies:  # a config may hold it for the runs given --unlabelled
            log.info("  training.distill.unlabelled_copies: %d changes nothing: no unlabelled recordings", copies)
        return
    why = None
    if not t.distill.teacher or t.distill.weight <= 0:
        why = "need a teacher (training.distill.teacher, or --teacher) and training.distill.weight > 0: only its " \
              "outputs say anything of them"
    elif d.normalize not in ("global", "none"):
        why = f"need data.normalize global or none (got {d.normalize}): their speakers and corpora have no statistics"
    elif t.augment.mixup:
        why = "cannot be mixed (set training.augment.mixup: 0)"
    if why:
        raise UsageError(f"training.distill.unlabelled {t.distill.unlabelled}: recordings without labels {why}")


def prepare_unlabelled(cfg: Config, data: PreparedData, progress: bool | None = None) -> list[dict]:
    """Training rows without labels (``unlabelled: True``, label index -1) from ``training.distill.unlabelled``:
    a folder of recordings (recursive) or a CSV with a ``path`` column (relative to the CSV's folder; other
    columns ignored), ``unlabelled_max`` of them drawn with the training seed, their features cached, with the first
    ``unlabelled_copies`` of the labelled rows' ``aug`` copies. A file that is one of the labelled recordings, or a
    byte-for-byte copy of one, is left out (a test recording would leak), and said; a re-encoded one is not."""
    import csv
    import random

    spec = cfg.training.distill.unlabelled
    if not spec:
        return []
    source = Path(spec)
    if source.is_dir():
        paths = [str((source / rel).resolve()) for rel in list_audio_files(source)]
    elif source.is_file():
        try:
            with open(source, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if "path" not in (reader.fieldnames or []):
                    raise UsageError(f"training.distill.unlabelled {source}: a CSV of unlabelled recordings needs a "
                                     f"'path' column (found: {', '.join(reader.fieldnames or []) or 'none'})")
                paths = [str(resolve_path(r["path"].strip(), None, source).resolve()) for r in reader
                         if (r["path"] or "").strip()]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise UsageError(f"training.distill.unlabelled {source}: not a readable CSV file ({exc})") from None
    else:
        raise UsageError(f"training.distill.unlabelled {spec}: no such folder or file; give a folder of recordings "
                         "or a CSV with a 'path' column")
    labelled = {file_signature(resolve_path(r["path"], data.root, data.manifest_path), with_time=False)
                for r in data.rows}
    overlap = {p for p in paths if Path(p).is_file() and file_signature(Path(p), with_time=False) in labelled}
    if overlap:
        log.info("  %d unlabelled recording(s) are labelled recordings of this run, or copies of them (e.g. %s): "
                 "left out", len(overlap), min(overlap))
    paths = sorted(set(paths) - overlap)
    most = cfg.training.distill.unlabelled_max
    if most and len(paths) > most:
        paths = sorted(random.Random(cfg.training.seed).sample(paths, most))
    if not paths:
        raise UsageError(f"training.distill.unlabelled {spec}: no recordings left to distil on")
    rows = [{"path": p, "label": "", "speaker": "unlabelled", "split": "train", "unlabelled": True} for p in paths]
    rows, failed = build_features(data.cache, rows, None, None, cfg.features.plugins, progress)
    for s in failed:
        log.info("  unlabelled recording skipped: %s", s["error"])
    log.info("  %d unlabelled recordings from %s, labelled by the teacher", len(rows), spec)
    variants = {f"aug{k}": data.variant_caches[f"aug{k}"] for k in range(cfg.training.distill.unlabelled_copies)}
    return rows + build_copies(variants, rows, None, None, cfg.features.plugins, progress, " of an unlabelled recording")


def fit_normalizer(cfg: Config, data: PreparedData) -> Normalizer:
    """``global``: statistics of the training split; ``speaker`` / ``corpus``: each group's own recordings
    (an augmented copy's group: its copies)."""
    mode = cfg.data.normalize
    train = [r for r in data.rows if r.get("split") == "train"]
    rows = train if mode == "global" else data.rows
    return Normalizer.fit(mode, rows + data.augmented, data.load, cfg.data.nap, train, cfg.data.whiten)


def make_loaders(cfg: Config, data: PreparedData, normalizer: Normalizer, rows_by_split: dict, distributed=None,
                 train_extras=None):
    """DataLoaders for ``{split: rows}``. Training order: a permutation seeded by (seed, epoch)
    (``DistributedSampler``'s), split over ranks under DDP, so N processes see exactly the
    batches one process would. ``train_extras``: one entry a training row, yielded with its item."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from .dataset import FeatureDataset, chunk_collate, frames_for_seconds, pad_collate

    d, t = cfg.data, cfg.training
    loaders = {}
    for split, rows in rows_by_split.items():
        train = split == "train"
        ds = FeatureDataset(rows, data.root, data.cache, data.labels, train=train, max_seconds=d.max_seconds,
                            normalizer=normalizer, manifest_path=data.manifest_path,
                            extras=train_extras if train else None, variant_caches=data.variant_caches)
        if not len(ds) and (distributed is None or split != "val"):
            raise UsageError(f"the {split} split is empty; check data.split (val/test speakers) and data.labels")
        collate = pad_collate
        if not train and d.eval_chunk_seconds:
            collate = chunk_collate(frames_for_seconds(d.eval_chunk_seconds, data.cache))
        sampler, batch = None, t.batch_size
        if train:
            sampler = distributed.make_sampler(ds, t.seed) if distributed else \
                DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=t.seed)
            batch = distributed.local_batch(batch) if distributed else batch
        loaders[split] = DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=collate,
                                    num_workers=d.num_workers, persistent_workers=d.num_workers > 0)
    return loaders


def input_shape(data: PreparedData) -> tuple:
    """``(features, frames)`` of the first recording: what the model is built for."""
    feats = data.load(data.rows[0])
    return (int(feats.shape[0]), int(feats.shape[1]))
