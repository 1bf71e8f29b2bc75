"""``emodet data synth | prepare | split`` and ``emodet features``: corpora, manifests and the feature cache."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..core.errors import UsageError
from ..core.text import parse_assignments
from .common import EXIT_FAILED, EXIT_OK, add_progress, examples, fraction_or_count, progress_of, require


# -- emodet data synth -----------------------------------------------------------------------
def add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic labelled corpus (folder per label)",
                       description="Speech-like recordings of 5 emotions by several speakers, folder per label, "
                                   "with metadata.csv: a corpus to try emodet on without a download.",
                       epilog=examples("emodet data synth --out synth/ --per-class 12 --speakers 8 --seed 0"))
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--per-class", type=int, default=12, help="utterances per class and speaker (default: 12)")
    p.add_argument("--speakers", type=int, default=8, help="number of speakers (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    from ..data.synth import generate_corpus

    start = time.perf_counter()
    rows = generate_corpus(args.out, per_class=args.per_class, speakers=args.speakers, seed=args.seed)
    seconds = sum(r["duration_s"] for r in rows)
    labels = sorted({r["label"] for r in rows})
    print(f"synthetic corpus: {len(rows)} files, {args.speakers} speakers, {len(labels)} labels "
          f"({', '.join(labels)}), {seconds / 60:.1f} min of audio in {time.perf_counter() - start:.1f} s -> {args.out}")
    return EXIT_OK


# -- emodet data prepare / split -------------------------------------------------------------
def _add_split_args(p) -> None:
    p.add_argument("--val", type=fraction_or_count, default=0.1,
                   help="validation speakers: a fraction below 1 or a count (default: 0.1)")
    p.add_argument("--test", type=fraction_or_count, default=0.2,
                   help="test speakers: a fraction below 1 or a count (default: 0.2); 0 for a final model "
                        "trained on every speaker")
    p.add_argument("--folds", type=int, default=5, help="k for the 'fold' column of k folds by speaker (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")


def add_prepare(sub) -> None:
    from ..data.corpora import CORPUS_NAMES

    p = sub.add_parser(
        "prepare", help="parse a corpus (or several) into a manifest CSV with speaker-independent splits",
        description="Parse a corpus folder into a manifest CSV (path,label,speaker,corpus,duration_s,split,...). "
                    "Give several --corpus/--root pairs for one manifest over several corpora: paths are then "
                    "relative to the manifest's folder and speakers are prefixed with their corpus.",
        epilog=examples("emodet data prepare --corpus emodb --root ../shared/datasets/emodb --out emodb.csv",
                        "emodet data prepare --corpus folder --root my_corpus/ --out m.csv",
                        "emodet data prepare --corpus csv --root list.csv --out m.csv --column path=file "
                        "--column label=emotion",
                        "emodet data prepare --corpus emodb --root E --corpus ravdess --root R --corpus nemo --root N "
                        "--labels neutral,happy,sad,angry --out three.csv"))
    p.add_argument("--corpus", required=True, action="append", metavar="NAME",
                   help=f"{', '.join(CORPUS_NAMES)} (folder: folder per label, your own labels kept; "
                        "repeat with --root for several corpora)")
    p.add_argument("--root", required=True, action="append", metavar="DIR",
                   help="corpus folder (for --corpus csv: the CSV file); one per --corpus")
    p.add_argument("--out", required=True, metavar="CSV", help="manifest CSV to write")
    p.add_argument("--labels", help="keep only these labels, e.g. neutral,happy,sad,angry (each must be found)")
    p.add_argument("--label-map", metavar="FILE", help="YAML/JSON/CSV mapping of labels to others "
                   "(an empty target drops a label), e.g. {frustrated: angry, other: ''}")
    p.add_argument("--speaker-pattern", metavar="REGEX", help="--corpus folder: regex giving the speaker from the "
                   "file name (group 'speaker' or the first group; default: the file name up to the first _, -, space or .)")
    p.add_argument("--column", action="append", metavar="KEY=NAME",
                   help="--corpus csv: the CSV's column for path, label or speaker, e.g. --column path=file")
    _add_split_args(p)
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args) -> int:
    from ..data.corpora import merge_corpora, prepare_corpus
    from ..data.labels import load_label_map, parse_label_list
    from ..data.manifest import write_manifest
    from ..data.checks import warn_about_data
    from ..data.splits import assign_splits, split_summary
    from ..core.io import atomic_write_csv

    if len(args.corpus) != len(args.root):
        raise UsageError(f"give one --root for each --corpus ({len(args.corpus)} --corpus, {len(args.root)} --root)")
    columns = {k: str(v) for k, v in parse_assignments(args.column, "--column", "path=file")}
    label_map, labels = load_label_map(args.label_map), parse_label_list(args.labels)
    results = [prepare_corpus(c, r, label_map, labels, args.speaker_pattern, columns)
               for c, r in zip(args.corpus, args.root)]
    for result in results:
        if not result.rows:
            raise UsageError(f"--root {result.root}: no file parsed as corpus {result.corpus!r} "
                             f"({len(result.failed)} failed, e.g. {result.failed[0]['path']}: "
                             f"{result.failed[0]['reason']})" if result.failed
                             else f"--root {result.root}: no file left after --labels/--label-map")
    out = Path(args.out)
    rows = results[0].rows if len(results) == 1 else merge_corpora(results, out.parent)
    assign_splits(rows, args.val, args.test, args.folds, args.seed)
    write_manifest(out, rows)
    failed = [{**f, "corpus": r.corpus} for r in results for f in r.failed]
    unparsed = out.with_name(out.stem + ".unparsed.csv")
    if failed:
        atomic_write_csv(unparsed, failed, ["path", "reason", "corpus"])
    elif unparsed.exists():
        unparsed.unlink()
    where = results[0].root if len(results) == 1 else f"the manifest's folder {out.parent.resolve()}"
    names = ", ".join(r.corpus for r in results)
    print(f"{names}: {len(rows)} files, {len({r['speaker'] for r in rows})} speakers -> {out} (paths relative to {where})")
    print(split_summary(rows))
    for result in results:
        notes = [f"{result.dropped} dropped by --label-map" if result.dropped else "",
                 f"{result.excluded} with labels outside --labels" if result.excluded else "",
                 "not audio: " + ", ".join(f"{n} {ext}" for ext, n in sorted(result.ignored.items()))
                 if result.ignored else ""]
        if any(notes):
            print(f"  {result.corpus}: left out on purpose: " + "; ".join(n for n in notes if n))
        if result.own_labels:
            print(f"  {result.corpus}: labels kept as they are (not in the canonical set): "
                  f"{', '.join(sorted(result.own_labels))}")
    warn_about_data(rows, sorted({r["label"] for r in rows}), selects_on_val=True)
    if failed:
        for item in failed[:10]:
            print(f"  not parsed: {item['path']}: {item['reason']}", file=sys.stderr)
        more = f", {len(failed) - 10} more" if len(failed) > 10 else ""
        print(f"  {len(failed)} file(s) not in the manifest{more}; all listed in {unparsed}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def add_split(sub) -> None:
    p = sub.add_parser("split", help="(re)write the speaker-independent split and fold columns of a manifest",
                       epilog=examples("emodet data split --manifest m.csv --val 2 --test 3 --seed 1"))
    p.add_argument("--manifest", required=True, metavar="CSV", help="manifest to re-split")
    p.add_argument("--out", metavar="CSV", help="write here instead of replacing --manifest")
    _add_split_args(p)
    p.set_defaults(func=cmd_split)


def cmd_split(args) -> int:
    from ..data.manifest import read_manifest_unsplit, write_manifest
    from ..data.splits import assign_splits, split_summary

    rows = [{**r, "split": ""} for r in read_manifest_unsplit(args.manifest)]
    assign_splits(rows, args.val, args.test, args.folds, args.seed)
    out = args.out or args.manifest
    write_manifest(out, rows)
    print(f"split {len(rows)} files by speaker (seed {args.seed}) -> {out}")
    print(split_summary(rows))
    return EXIT_OK


# -- emodet features -------------------------------------------------------------------------
def add_features(sub) -> None:
    p = sub.add_parser("features", help="build a feature cache for a folder of audio",
                       description="Compute a feature for every audio file under --data-root into --cache-dir "
                                   "(one .npy a file, written atomically; a rerun computes only what is missing).",
                       epilog=examples("emodet features --data-root corpus/ --feature mfcc --cache-dir cache/ "
                                       "--param n_mfcc=20 --workers 2", "emodet features --list"))
    add_feature_args(p)
    p.set_defaults(func=cmd_features)


def add_feature_args(p) -> None:
    p.add_argument("--data-root", metavar="DIR", help="folder of audio files (searched recursively)")
    p.add_argument("--feature", default="logmel", help="registered feature name (default: logmel); --list shows them")
    p.add_argument("--cache-dir", metavar="DIR", help="folder of the feature cache")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="feature parameter (librosa's names), repeatable")
    p.add_argument("--sr", type=int, default=16000, help="sample rate audio is resampled to (default: 16000)")
    p.add_argument("--workers", type=int, default=1, help="processes computing features (default: 1)")
    p.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                   help="skip bad files and report them (default) or stop at the first")
    p.add_argument("--shard", metavar="I/N", help="build only shard I of N (0-based), e.g. for several machines")
    p.add_argument("--speed", action="append", type=float, default=[], metavar="FACTOR",
                   help="also build the features of every file speed-perturbed by FACTOR (repeatable), as training with "
                        "training.augment.speed reads them, e.g. --speed 0.9 --speed 1.1")
    p.add_argument("--plugin", action="append", metavar="MODULE_OR_FILE", help="import a module that registers features")
    p.add_argument("--list", action="store_true", help="list the registered features and exit")
    add_progress(p)


def cmd_features(args) -> int:
    from ..core.audio import check_speed_factors, extensions_text
    from ..core.files import list_audio_files
    from ..data.cache import FeatureCache
    from ..features import get_feature_spec, list_features, load_plugins

    load_plugins(args.plugin)
    if args.list:
        for name in list_features():
            spec = get_feature_spec(name)
            alias = f" (alias: {', '.join(spec.aliases)})" if spec.aliases else ""
            params = ", ".join(f"{k}={json.dumps(v)}" for k, v in (spec.defaults or {}).items())
            print(f"{name:10s} {spec.description}{alias}" + (f"\n{'':10s} parameters: {params}" if params else ""))
        return EXIT_OK
    args.command = "features"
    require(args, "--data-root", "--cache-dir")
    check_speed_factors(args.speed, "--speed")
    params = dict(parse_assignments(args.param, "--param", "n_mels=64"))
    if not list_audio_files(args.data_root, exclude=[args.cache_dir]):
        raise UsageError(f"--data-root {args.data_root}: no audio files found (extensions read: {extensions_text()})")
    status = EXIT_OK
    for speed in [None, *args.speed]:  # the recordings as they are, then each perturbed copy
        cache = FeatureCache(args.cache_dir, args.feature, params, sr=args.sr, speed=speed)
        report = cache.build(args.data_root, workers=args.workers, on_error=args.on_error, shard=args.shard,
                             progress=progress_of(args), plugins=args.plugin or ())
        print(report.summary_line() + (f" (speed {speed:g})" if speed else ""))
        if report.failed:
            for item in report.failed[:10]:
                print(f"  failed: {item['error']}", file=sys.stderr)
            more = f" ({len(report.failed) - 10} more)" if len(report.failed) > 10 else ""
            name = "report.json" if report.shard is None else f"report-shard-{report.shard.replace('/', '-of-')}.json"
            print(f"  {len(report.failed)} file(s) failed{more}; all listed in {Path(report.cache_dir) / name}",
                  file=sys.stderr)
            status = EXIT_FAILED
    return status
