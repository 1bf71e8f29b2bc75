"""One experiment from a config: data -> features -> model -> train_loop -> test metrics -> run directory.

    run_experiment(load_config("configs/resnet_mfcc.yaml", data_root="..."), "resnet_mfcc_v1")

The run directory holds ``config.yaml`` (resolved), ``manifest.csv`` (with the split used),
``history.csv``, ``metrics.json``, ``checkpoints/{best,last}.pt``, ``confusion_matrix.png``,
``curves.png`` and TensorBoard events (``tb/``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import __version__
from .config import check_data_root, dump_config, load_config
from .data.cache import FeatureCache
from .data.corpora import prepare_corpus
from .data.dataset import (FeatureDataset, Normalizer, chunk_collate, frames_for_seconds, locate, pad_collate,
                           row_cache)
from .data.labels import CANONICAL_LABELS, load_label_map
from .data.manifest import read_manifest, write_manifest
from .data.splits import assign_splits
from .errors import UsageError
from .evaluation.evaluate import write_predictions
from .evaluation.metrics import classification_metrics
from .evaluation.report import plot_confusion, plot_curves
from .features import load_plugins
from .io import atomic_write_csv, atomic_write_json, atomic_write_text
from .models import build_model, count_parameters
from .training.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from .training.loop import TrainConfig, predict_logits, train_loop


def train_config_from(cfg: dict) -> TrainConfig:
    t = cfg["training"]
    return TrainConfig(
        epochs=t["epochs"], lr=float(t["lr"]), weight_decay=float(t["weight_decay"]), optimizer=t["optimizer"],
        scheduler=t["scheduler"], amp=t["amp"], early_stopping_metric=t["early_stopping"]["metric"],
        patience=t["early_stopping"]["patience"], min_delta=float(t["early_stopping"]["min_delta"]),
        loss=t["loss"]["type"], gamma=float(t["loss"]["gamma"]), class_weights=t["loss"]["class_weights"],
        label_smoothing=float(t["loss"]["label_smoothing"]), specaugment=t["augment"]["specaugment"],
        freq_masks=t["augment"]["freq_masks"], freq_width=t["augment"]["freq_width"],
        time_masks=t["augment"]["time_masks"], time_width=t["augment"]["time_width"],
        mixup=float(t["augment"]["mixup"]), distill_weight=float(t["distill"]["weight"]),
        distill_temperature=float(t["distill"]["temperature"]), grad_clip=float(t["grad_clip"]), seed=t["seed"],
        device=t["device"])


@dataclass
class PreparedData:
    rows: list
    root: Path | None
    manifest_path: Path | None
    labels: list
    cache: FeatureCache
    skipped: list
    augmented: list = field(default_factory=list)  # speed-perturbed copies of training rows (a ``speed`` key each)
    speed_caches: dict = field(default_factory=dict)  # factor -> FeatureCache of the perturbed features

    def load(self, row: dict):
        """Cached features of a row (a perturbed copy's from its factor's cache)."""
        return row_cache(row, self.cache, self.speed_caches).load(*locate(row["path"], self.root, self.manifest_path))


def prepare_data(cfg: dict, run_dir: Path | None = None, progress: bool | None = None) -> PreparedData:
    """Manifest (given, or parsed from ``data.root``), split, labels, and a complete feature cache."""
    d = cfg["data"]
    root = check_data_root(cfg)
    load_plugins(cfg["features"]["plugins"])
    if d["manifest"]:
        manifest_path = Path(d["manifest"])
        rows = read_manifest(manifest_path)
    else:
        result = prepare_corpus(d["corpus"], root, load_label_map(d["label_map"]), None, d["speaker_pattern"])
        if not result.rows:
            raise UsageError(f"data.root {root}: no file parsed as corpus {result.corpus!r}; set data.corpus "
                             "(emodb, ravdess, crema-d, tess, savee, folder, csv)")
        rows, manifest_path = result.rows, None
        for item in result.failed:
            print(f"  not parsed: {item['path']}: {item['reason']}")
    labels = d["labels"] or sorted({r["label"] for r in rows},
                                   key=lambda x: (CANONICAL_LABELS.index(x) if x in CANONICAL_LABELS else 99, x))
    unknown = [lab for lab in labels if lab not in {r["label"] for r in rows}]
    if unknown:
        raise UsageError(f"data.labels: no recording has label {unknown[0]!r}; labels in the data: "
                         f"{', '.join(sorted({r['label'] for r in rows}))}")
    outside = sum(1 for r in rows if r["label"] not in labels)
    if outside:
        print(f"  {outside} recording(s) with labels outside data.labels ({', '.join(labels)}) left out")
    rows = [r for r in rows if r["label"] in labels]
    if d["split"]["method"] == "speaker" or not any(r.get("split") for r in rows):
        assign_splits(rows, d["split"]["val"], d["split"]["test"], folds=None, seed=d["split"]["seed"])
    def build(cache: FeatureCache, rows: list) -> tuple[list, list]:
        """Fill ``cache`` for ``rows``; ``(rows whose features exist, failures)``."""
        failed, groups = [], {}
        for r in rows:
            base, rel = locate(r["path"], root, manifest_path)
            groups.setdefault(base, []).append(rel)
        for base, rels in groups.items():
            failed += cache.build(base, rels, progress=progress, plugins=cfg["features"]["plugins"]).failed
        bad = {s["path"] for s in failed}
        return [r for r in rows if locate(r["path"], root, manifest_path)[1] not in bad], failed

    def new_cache(speed=None) -> FeatureCache:
        return FeatureCache(cfg["features"]["cache_dir"], cfg["features"]["type"], cfg["features"]["params"],
                            sr=d["sample_rate"], speed=speed)

    cache = new_cache()
    rows, skipped = build(cache, rows)
    for s in skipped:
        print(f"  skipped: {s['error']}")
    augmented, speed_caches = [], {}
    for factor in cfg["training"]["augment"]["speed"]:  # training recordings only; each copy its own pseudo-speaker
        speed_caches[factor] = new_cache(factor)
        kept, failed = build(speed_caches[factor], [r for r in rows if r.get("split") == "train"])
        augmented += [{**r, "speaker": f"{r['speaker']}@speed{factor:g}", "speed": factor} for r in kept]
        for s in failed:
            print(f"  no speed {factor:g} copy: {s['error']}")
    if run_dir is not None:
        write_manifest(run_dir / "manifest.csv", rows)
        if skipped:
            atomic_write_csv(run_dir / "skipped.csv", skipped, ["path", "error"])
    return PreparedData(rows, root, manifest_path, labels, cache, skipped, augmented, speed_caches)


def fit_normalizer(cfg: dict, data: PreparedData) -> Normalizer:
    """``global``: statistics of the training split; ``speaker``: each speaker's own recordings
    (a speed-perturbed copy's pseudo-speaker: its copies)."""
    mode = cfg["data"]["normalize"]
    if mode == "global":
        return Normalizer.fit(mode, [r for r in data.rows if r.get("split") == "train"] + data.augmented, data.load)
    return Normalizer.fit(mode, data.rows + data.augmented, data.load)


def make_loaders(cfg: dict, data: PreparedData, normalizer: Normalizer, rows_by_split: dict, distributed=None,
                 train_extras=None):
    """DataLoaders for ``{split: rows}``. Training order: a permutation seeded by (seed, epoch)
    (``DistributedSampler``'s), split over ranks under DDP, so N processes see exactly the
    batches one process would. ``train_extras``: one entry a training row, yielded with its item."""
    from torch.utils.data.distributed import DistributedSampler

    d, t = cfg["data"], cfg["training"]
    loaders = {}
    for split, rows in rows_by_split.items():
        train = split == "train"
        ds = FeatureDataset(rows, data.root, data.cache, data.labels, train=train, max_seconds=d["max_seconds"],
                            normalizer=normalizer, manifest_path=data.manifest_path,
                            extras=train_extras if train else None, speed_caches=data.speed_caches)
        if not len(ds) and (distributed is None or split != "val"):
            raise UsageError(f"the {split} split is empty; check data.split (val/test speakers) and data.labels")
        collate = pad_collate
        if not train and d["eval_chunk_seconds"]:
            collate = chunk_collate(frames_for_seconds(d["eval_chunk_seconds"], data.cache))
        sampler, batch = None, t["batch_size"]
        if train:
            sampler = distributed.make_sampler(ds, t["seed"]) if distributed else \
                DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=t["seed"])
            batch = distributed.local_batch(batch) if distributed else batch
        loaders[split] = DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=collate,
                                    num_workers=d["num_workers"], persistent_workers=d["num_workers"] > 0)
    return loaders


def input_shape(data: PreparedData) -> tuple:
    first = data.rows[0]
    feats = data.cache.load(*locate(first["path"], data.root, data.manifest_path))
    return (int(feats.shape[0]), int(feats.shape[1]))


class RecordingTeacher:
    """A teacher's logits computed once for each training recording, from the teacher's own
    features (e.g. an MLP on openSMILE functionals teaching a log-mel CNN); the training loop
    reads them from the batch instead of calling a model."""

    per_item = True

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


def resolve_teacher(spec: str | Path, test_speakers: set[str]) -> Path:
    """A run or ensemble directory as given; for a cross-validation directory, its fold that held out
    exactly ``test_speakers`` (so distilling fold by fold never shows a student its test speakers)."""
    path = Path(spec)
    folds = sorted(path.glob("fold_*/metrics.json"))
    if not folds:
        return path
    for metrics in folds:
        held_out = set(json.loads(metrics.read_text()).get("test", {}).get("speakers", []))
        if held_out == set(test_speakers):
            return metrics.parent
    raise UsageError(f"training.distill.teacher {spec}: no finished fold of this cross-validation held out "
                     f"{', '.join(sorted(test_speakers)) or 'no speakers'}; run the teacher's cv with the same folds "
                     "(and split seed) first")


def load_teacher(spec: str | None, device="cpu", data: PreparedData | None = None, train_rows=None,
                 test_speakers=(), cfg: dict | None = None, normalizer: dict | None = None):
    """A frozen teacher from a run, ensemble or cross-validation directory.

    Same features and normalisation as the student (``normalizer``: the student's, as saved):
    ``fn(x, lengths) -> logits`` on the student's batches. Otherwise (``data`` given): a
    ``RecordingTeacher`` with logits of every row of ``train_rows`` from its own inputs.
    A teacher that trained or validated on one of ``test_speakers`` is refused (it would leak them).
    """
    if not spec:
        return None
    from .ensemble import load_predictor, predictor_info, training_speakers

    path = resolve_teacher(spec, set(test_speakers)) if test_speakers else Path(spec)
    leaked = training_speakers(path) & set(test_speakers)
    if leaked:
        raise UsageError(f"training.distill.teacher {path} was trained on test speaker(s) {', '.join(sorted(leaked))}; "
                         "its outputs would leak them into the student (use a teacher trained without them, "
                         "e.g. the matching fold of a cross-validation)")
    info = predictor_info(path)
    model = load_predictor(path, device)
    same = data is None or (info["feature"] == data.cache.feature and info["feature_params"] == data.cache.params
                            and int(info["sample_rate"]) == data.cache.sr
                            and (normalizer is None or info["normalizer"] == normalizer))
    if same:
        def teacher(x, lengths):
            with torch.no_grad():
                return model(x, lengths)

        return teacher
    if sorted(info["labels"]) != sorted(data.labels):
        raise UsageError(f"training.distill.teacher {path}: its labels ({', '.join(info['labels'])}) differ from the "
                         f"student's ({', '.join(data.labels)})")
    if cfg is not None and cfg["training"]["augment"]["mixup"] > 0:
        raise UsageError("training.augment.mixup cannot be combined with a teacher on other features or "
                         "normalisation (its outputs are per recording); set mixup to 0 or use a teacher with the "
                         "student's features and normalisation")
    if cfg is not None and cfg["training"]["augment"]["speed"]:
        raise UsageError("training.augment.speed cannot be combined with a teacher on other features or "
                         "normalisation (its outputs are of the unperturbed recordings); set speed to [] or use a "
                         "teacher with the student's features and normalisation")
    from .evaluation.evaluate import predict_rows

    load_plugins(info["plugins"])
    cache = FeatureCache(data.cache.root_dir, info["feature"], info["feature_params"], sr=int(info["sample_rate"]))
    logits = predict_rows(model, train_rows, data.root, data.manifest_path, info["labels"], cache, info["normalizer"])
    order = [info["labels"].index(label) for label in data.labels]
    return RecordingTeacher(logits[:, order].contiguous())


def run_experiment(cfg: dict, run_name: str, runs_dir: str | Path = "runs", resume: bool = False,
                   progress: bool | None = None, distributed=None) -> dict:
    """Train and test one model; returns the test metrics (also in ``metrics.json``)."""
    run_dir = Path(runs_dir) / run_name
    is_main = distributed is None or distributed.is_main
    check_data_root(cfg)  # before anything is written
    started = (run_dir / "checkpoints" / "last.pt").exists() or (run_dir / "metrics.json").exists()
    if started and not resume:
        raise UsageError(f"run directory {run_dir} already holds a run: pass --resume to continue it, "
                         "or choose another --run-name")
    if resume and started and (run_dir / "config.yaml").exists():
        saved = load_config(run_dir / "config.yaml")  # defaults filled: a key added since the run started is no change
        if saved != json.loads(json.dumps(cfg)):
            raise UsageError(f"--resume: the config differs from the one {run_dir} was started with "
                             "(resume needs the same config; start a new --run-name for a new one)")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    t0 = time.perf_counter()
    if distributed is not None and not is_main:
        distributed.barrier()  # rank 0 builds the feature cache first; the others then read it
    data = prepare_data(cfg, run_dir if is_main else None, progress if is_main else False)
    if distributed is not None:
        if is_main:
            distributed.barrier()
        distributed.check_same("data", [(r["path"], r["label"], r["speaker"], r["split"]) for r in data.rows])
    by_split = {s: [r for r in data.rows if r["split"] == s] for s in ("train", "val", "test")}
    by_split["train"] += data.augmented
    es = cfg["training"]["early_stopping"]
    if not by_split["val"] and (es["select"] != "last" or es["patience"] > 0):
        raise UsageError("no validation speakers (data.split.val: 0): early stopping and model selection need them; "
                         "set data.split.val > 0, or train a fixed number of epochs with "
                         "training.early_stopping: {select: last, patience: 0}")
    normalizer = fit_normalizer(cfg, data)
    teacher = load_teacher(cfg["training"]["distill"]["teacher"], "cpu", data, by_split["train"],
                           {r["speaker"] for r in by_split["test"]}, cfg, json.loads(json.dumps(normalizer.to_dict())))
    extras = list(teacher.logits) if isinstance(teacher, RecordingTeacher) else None
    loader_rows = {k: v for k, v in by_split.items() if v or k == "train"}  # no val: fixed epochs, nothing to watch
    if distributed is not None and by_split["val"]:  # validation over ranks, outputs gathered; test on rank 0 after
        loader_rows["val"] = distributed.shard(by_split["val"])
    loaders = make_loaders(cfg, data, normalizer, loader_rows, distributed, train_extras=extras)
    shape = input_shape(data)
    seed_everything(cfg["training"]["seed"])  # the initial weights depend on the seed alone
    model = build_model(cfg["model"]["name"], len(data.labels), shape, cfg["model"]["preset"],
                        **cfg["model"]["params"])
    train_cfg = train_config_from(cfg)
    writer = _tensorboard(run_dir) if is_main else None
    if distributed is not None:
        model = distributed.wrap(model)
    if distributed is not None:
        train_cfg.device = str(distributed.device)
    if is_main:
        print(f"{run_name}: {cfg['model']['name']} ({cfg['model']['preset']}, {count_parameters(model):,} parameters) "
              f"on {cfg['features']['type']}; {len(by_split['train'])} train"
              f"{f' (with {len(data.augmented)} speed-perturbed copies)' if data.augmented else ''} / {len(by_split['val'])} val / "
              f"{len(by_split['test'])} test recordings; labels {', '.join(data.labels)}", flush=True)
    result = train_loop(model, loaders["train"], loaders.get("val"), train_cfg, data.labels, run_dir=run_dir, resume=resume,
                        teacher=teacher, progress=progress, writer=writer, is_main=is_main,
                        reduce_metrics=distributed.gather if distributed else None)
    if writer is not None:
        writer.close()
    if distributed is not None:
        distributed.barrier()  # rank 0's checkpoints are complete before anyone goes on
    if not is_main:
        return {}
    core = model.module if hasattr(model, "module") else model
    select = cfg["training"]["early_stopping"]["select"]  # "last": a fixed number of epochs, chosen beforehand
    if select == "last":
        save_checkpoint(run_dir / "checkpoints" / "best.pt", {"model": core.state_dict(), "epoch": result.epochs_run - 1,
                                                               "metric": "last", "value": float("nan")})
    core.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    device = next(core.parameters()).device
    metrics = {"run": run_name, "emodet_version": __version__,
               "best_epoch": result.best_epoch if select == "best" else result.epochs_run, "selected": select,
               "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
               "parameters": count_parameters(core), "normalize": cfg["data"]["normalize"],
               "train_seconds": round(time.perf_counter() - t0, 1)}
    if cfg["data"]["normalize"] == "speaker":
        metrics["normalize_note"] = ("per-speaker normalisation: each test speaker's features were normalised with "
                                     "statistics of that speaker's own unlabelled test recordings")
    if distributed is not None:  # training split validation over ranks; the final figures use every recording
        loaders = make_loaders(cfg, data, normalizer, {k: v for k, v in by_split.items() if v and k != "train"})
    for split in ("val", "test"):
        if split in loaders:
            logits, targets = predict_logits(core, loaders[split], device, cfg["training"]["amp"])
            m = classification_metrics(targets.numpy(), logits.argmax(1).numpy(), data.labels)
            m["speakers"] = sorted({r["speaker"] for r in by_split[split]})
            metrics[split] = m
            write_predictions(run_dir / f"predictions_{split}.csv", by_split[split], logits, data.labels)
    if "test" in metrics:  # the design's contract: test figures at the top level
        metrics.update({k: metrics["test"][k] for k in ("uar", "wa", "macro_f1", "labels", "confusion_matrix",
                                                          "per_class")})
    metrics["model"] = {"name": cfg["model"]["name"], "preset": cfg["model"]["preset"], "params": cfg["model"]["params"],
                        "input_shape": list(shape)}
    metrics["features"] = {"type": data.cache.feature, "params": data.cache.params, "sample_rate": data.cache.sr}
    metrics["normalizer"] = normalizer.to_dict()
    metrics["skipped_files"] = len(data.skipped)
    if data.augmented:
        metrics["speed_perturbed_copies"] = {f"{f:g}": sum(1 for r in data.augmented if r["speed"] == f)
                                             for f in data.speed_caches}
    atomic_write_json(run_dir / "metrics.json", metrics)
    split_for_plot = "test" if "test" in metrics else "val"
    plot_confusion(metrics[split_for_plot]["confusion_matrix"], data.labels, run_dir / "confusion_matrix.png",
                   f"{run_name}: {split_for_plot} UAR {metrics[split_for_plot]['uar']:.3f}")
    if result.history:
        plot_curves(result.history, run_dir / "curves.png", run_name)
    return metrics


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the run still has history.csv and curves.png
        return None
    return SummaryWriter(str(run_dir / "tb"))


def load_run(run_dir: str | Path, device="cpu"):
    """``(model, config, metrics)`` of a finished run directory, the model in eval mode with its best weights."""
    from .ensemble import run_info

    run_dir = Path(run_dir)
    info = run_info(run_dir)  # refuses a folder that is not a finished run
    cfg = load_config(run_dir / "config.yaml")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = build_model(cfg["model"]["name"], len(info["labels"]), tuple(info["input_shape"]), cfg["model"]["preset"],
                        **cfg["model"]["params"])
    try:
        model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt", map_location=device)["model"])
    except RuntimeError as exc:
        raise UsageError(f"{run_dir}: the checkpoint does not fit model {cfg['model']['name']!r} of this emodet "
                         f"version (trained by another version?): {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), cfg, metrics
