"""Speaker-independent accuracy: leave-one-speaker-out over the shipped configs, and late-fusion ensembles.

    python bench/accuracy.py --corpus emodb [--configs fc_compare resnet_mfcc ...] [--ensemble fc_compare+resnet_mfcc]
    python bench/accuracy.py --corpus ravdess --configs fc_compare
    python bench/accuracy.py --corpus ravdess --recipe all
    python bench/accuracy.py --corpus emodb --json emodb.json   # the table as JSON too (and its HTML report)
    python bench/accuracy.py --select encoder_whisper_linear --grid loso16   # settings chosen by inner LOSO

A member is config[:preset][@seed][~variant...]: name@N is the config trained with
training.seed=N; ~trim drops leading and trailing silence before the features
(features.params.trim_db=30); ~sp adds speed-perturbed copies of the training recordings
(training.augment.speed=[0.9, 1.1]); for encoder configs, ~L2 keeps hidden state 2 alone
(features.params.layers=[2]) and ~pad runs the encoder on recordings padded to its whole window
(features.params.pad_to_window=true); ~nap0 turns NAP off (data.nap=0), ~aug adds
two augmented copies of each training recording (training.augment.waveform.copies=2) and ~babtr
mixes their babble from the other training speakers' recordings instead of synthetic voices
(training.augment.waveform.babble_from=training).
--recipe NAME runs a named fusion's members and fuses them (equal-weight mean of probabilities); the recipes (RECIPES below):

    v2               fc_compare x 3 seeds + cnn_logmel x 2 seeds           EmoDB 0.871
    tiny             linear_compare + cnn_logmel (0.62 MB; bench/edge.py --fuse runs it
                     through the torch-free runtime)                       EmoDB 0.858
    functionals      fc_compare x 3 + linear_compare + linear_egemaps + linear_emobase
                                                                           EmoDB 0.851, RAVDESS 0.684
    functionals_cnn  functionals + cnn_logmel x 2                          EmoDB 0.873
    all              functionals, + fc_compare x 3 and linear_compare ~trim, + fc_compare x 3,
                     linear_compare and linear_egemaps ~sp (15 members)    EmoDB 0.853, RAVDESS 0.703
    all_cnn          all + cnn_logmel x 2                                  EmoDB 0.867
    encoder_functionals      encoder_whisper_linear + functionals (bench/PROTOCOLS.md, 2026-12-01 22:50)
    encoder_functionals_cnn  encoder_whisper_linear + functionals_cnn
    encoder_ft_functionals   encoder_whisper_finetune + encoder_functionals (bench/PROTOCOLS.md, 2026-12-02 06:23)

(leave-one-speaker-out pooled UAR on the copies in ../shared/datasets; the CNN recipes were not
run on RAVDESS: 24 CNN trainings take ~4 h a seed on 2 cores.)

Every config runs as `emodet cv --config configs/X.yaml --folds loso` would (validation
speakers drawn from each fold's training speakers, model selection on them only; the
held-out speaker is never seen). Runs are kept in --runs-dir and resumed, so an interrupted
benchmark continues where it stopped. An ensemble averages the class probabilities of its
members for each held-out recording (same folds, so still speaker-independent).

References on the same corpus copies (../shared/datasets/README.md and issue 5), all LOSO
with per-speaker z-score: EmoDB eGeMAPS+SVM 0.73, ComParE+SVM 0.83, plain small CNN 0.81;
RAVDESS eGeMAPS+SVM 0.575, ComParE+SVM 0.645.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path


from emodet.config import load_config
from emodet.workflows.cv import run_cv
from emodet.core.errors import EmodetError
from emodet.core.fusion import fuse_probabilities
from emodet.evaluation.metrics import classification_metrics, per_group_uar

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared selection
from _selection import choose, grid  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CORPORA = {"emodb": REPO.parent / "shared" / "datasets" / "emodb",
           "ravdess": REPO.parent / "shared" / "datasets" / "ravdess"}
# A member's variants: overrides for that member alone (its run name gets _<variant>).
VARIANTS = {"trim": ["features.params.trim_db=30"], "sp": ["training.augment.speed=[0.9, 1.1]"],
            "L2": ["features.params.layers=[2]"], "pad": ["features.params.pad_to_window=true"],
            "nap0": ["data.nap=0"], "aug": ["training.augment.waveform.copies=2"],
            "babtr": ["training.augment.waveform.babble_from=training"]}
_FC3 = ["fc_compare", "fc_compare@1", "fc_compare@2"]
_CNN2 = ["cnn_logmel", "cnn_logmel@1"]
_FUNCTIONALS = [*_FC3, "linear_compare", "linear_egemaps", "linear_emobase"]
_ALL = [*_FUNCTIONALS, *(f"{m}~trim" for m in [*_FC3, "linear_compare"]),
        *(f"{m}~sp" for m in [*_FC3, "linear_compare", "linear_egemaps"])]
RECIPES = {"v2": [*_FC3, *_CNN2], "tiny": ["linear_compare", "cnn_logmel"], "functionals": _FUNCTIONALS,
           "functionals_cnn": [*_FUNCTIONALS, *_CNN2], "all": _ALL, "all_cnn": [*_ALL, *_CNN2],
           "encoder_functionals": ["encoder_whisper_linear", *_FUNCTIONALS],
           "encoder_functionals_cnn": ["encoder_whisper_linear", *_FUNCTIONALS, *_CNN2],
           "encoder_ft_functionals": ["encoder_whisper_finetune", "encoder_whisper_linear", *_FUNCTIONALS]}
# candidates of the nested selection (--select CONFIG --grid NAME): bench/PROTOCOLS.md, 2026-12-02 09:46
GRIDS = {"loso16": grid(pooling=[(p, [f"features.params.pooling={p}"]) for p in ("meanstd", "mean")],
                        layers=[("Lall", ["features.params.layers=all"]), ("L123", ["features.params.layers=[1, 2, 3]"])],
                        aug=[(f"aug{k}", [f"training.augment.waveform.copies={k}"]) for k in (0, 2)],
                        wd=[(f"wd{w}", [f"training.weight_decay={w}"]) for w in (0.2, 0.8)])}
REFERENCES = {"emodb": [("eGeMAPS + SVM (reference)", 0.73), ("ComParE + SVM (reference)", 0.83),
                        ("plain small CNN (reference floor)", 0.81)],
              "ravdess": [("eGeMAPS + SVM (reference)", 0.575), ("ComParE + SVM (reference)", 0.645)]}


def pooled_predictions(cv_dir: Path) -> dict[str, dict]:
    with open(cv_dir / "predictions_pooled.csv", newline="") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


def fuse(members: list[dict[str, dict]], labels: list[str]) -> dict:
    paths = sorted(set.intersection(*(set(m) for m in members)))
    if any(len(m) != len(paths) for m in members):
        raise SystemExit("ensemble members hold predictions for different recordings: fuse runs of one corpus and "
                         "one set of folds")
    probs = fuse_probabilities([[[float(m[p][f"p_{lab}"]) for lab in labels] for p in paths] for m in members])
    index = {lab: i for i, lab in enumerate(labels)}
    targets = [index[members[0][p]["label"]] for p in paths]
    return classification_metrics(targets, probs.argmax(1), labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="emodb")
    ap.add_argument("--configs", nargs="*", default=None,
                    help="members to cross-validate, config[:preset][@seed][~variant...], variants "
                         f"{', '.join('~' + k for k in VARIANTS)} (default: fc_compare fc_mfcc "
                         "resnet_mfcc, or none with --recipe)")
    ap.add_argument("--ensemble", nargs="*", default=[],
                    help="members joined by +: configs run here or LOSO directories, e.g. fc_compare+runs/x/emodb_cnn_logmel")
    ap.add_argument("--recipe", action="append", default=[], choices=sorted(RECIPES),
                    help="run a named fusion's members and fuse them (repeatable)")
    ap.add_argument("--select", nargs="*", default=[], metavar="CONFIG",
                    help="linear configs whose settings are chosen for each held-out speaker by an inner "
                         "leave-one-speaker-out over the other speakers alone, among the candidates of --grid "
                         "(LOSO only)")
    ap.add_argument("--grid", default="loso16", choices=sorted(GRIDS), help="the candidates of --select")
    ap.add_argument("--folds", default="loso",
                    help="loso (the benchmark's protocol) or K folds by speaker (run names get _kK), e.g. for a "
                         "large corpus where 24 CNN trainings do not fit the time at hand")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs") / "bench_accuracy")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "emodet-bench")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="override for every config")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the printed table as JSON (rows with their "
                    "figures, and the reference rows); default with a report: <runs-dir>/accuracy_<corpus>.json")
    ap.add_argument("--no-report", action="store_true", help="do not write the table's HTML report (beside the JSON)")
    args = ap.parse_args()
    root = CORPORA[args.corpus]
    if not root.is_dir():
        print(f"{args.corpus} not found at {root}; this benchmark needs it")
        return 0
    if args.select and args.folds != "loso":
        raise SystemExit("--select chooses per held-out speaker: it runs with --folds loso")
    results = {}
    suffix = "" if args.folds == "loso" else f"_k{int(args.folds)}"
    configs = list(args.configs if args.configs is not None else [] if args.recipe or args.select else
                   ["fc_compare", "fc_mfcc", "resnet_mfcc"])
    ensembles = {spec: spec.split("+") for spec in args.ensemble}  # name in the table -> members
    for recipe in args.recipe:
        configs += [m for m in RECIPES[recipe] if m not in configs]
        ensembles[f"recipe {recipe} ({len(RECIPES[recipe])} members)"] = RECIPES[recipe]

    def run_name(name: str) -> str:
        return f"{args.corpus}_{name.replace(':', '_').replace('@', '_seed').replace('~', '_')}{suffix}"

    for name in configs:
        # config[:preset][@seed][~variant...], e.g. resnet_mfcc:tiny, cnn_logmel@1, fc_compare@2~trim
        base, *variants = name.split("~")
        name_seed = base.split("@")
        preset = name_seed[0].split(":")
        overrides = [f"features.cache_dir={args.cache_dir}", *args.overrides]
        if len(preset) > 1:
            overrides.append(f"model.preset={preset[1]}")
        if len(name_seed) > 1:
            if not name_seed[1].isdigit():
                raise SystemExit(f"member {name!r}: the seed after @ must be a whole number, e.g. {name_seed[0]}@1")
            overrides.append(f"training.seed={int(name_seed[1])}")
        for v in variants:
            if v not in VARIANTS:
                raise SystemExit(f"member {name!r}: unknown variant ~{v}; valid variants: "
                                 f"{', '.join('~' + k for k in VARIANTS)}")
            overrides += VARIANTS[v]
        cfg = load_config(REPO / "configs" / f"{preset[0]}.yaml", overrides, str(root))
        t0 = time.perf_counter()
        summary = run_cv(cfg, args.folds, run_name(name), args.runs_dir, progress=False,
                         new_name_hint="pass another --runs-dir (this benchmark names its runs <corpus>_<config>)")
        folds = [json.loads((args.runs_dir / run_name(name) / f"fold_{f['fold']:02d}" / "metrics.json").read_text())
                 for f in summary["folds"]]
        # training time as each fold recorded it, so a benchmark resumed from finished folds still reports it
        fold_seconds = sum(m["train_seconds"] for m in folds)
        results[name] = {"summary": summary, "seconds": fold_seconds, "params": folds[0]["parameters"],
                         "labels": folds[0]["labels"]}
        print(f"{name}: pooled UAR {summary['pooled']['uar']:.3f} (fold mean {summary['uar_mean']:.3f} +- "
              f"{summary['uar_std']:.3f}), {fold_seconds:.0f} s of training for all folds "
              f"({time.perf_counter() - t0:.0f} s in this call)", flush=True)
    for config in args.select:
        t0 = time.perf_counter()
        results[f"{config} selected ({args.grid})"] = selected(config, args, root, run_name)
        print(f"{config} selected ({args.grid}): pooled UAR "
              f"{results[f'{config} selected ({args.grid})']['summary']['pooled']['uar']:.3f} "
              f"({time.perf_counter() - t0:.0f} s in this call)", flush=True)
    fused = {}
    for title, members in ensembles.items():
        # a member is a config benchmarked here (as in --configs) or the path of a finished LOSO directory
        dirs = [Path(m) if "/" in m else args.runs_dir / run_name(m) for m in members]
        members = [pooled_predictions(d) for d in dirs]
        labels = [k[2:] for k in next(iter(members[0].values())) if k.startswith("p_")]  # the runs' class order
        fused[title] = fuse(members, labels)

    protocol = "leave-one-speaker-out" if args.folds == "loso" else f"{int(args.folds)} folds by speaker"
    print(f"\n{args.corpus}, {protocol}, pooled over all held-out recordings")
    w = max([40, *(len(n) + 1 for n in results), *(len(f"ensemble {t}") + 1 for t in fused if "+" not in t)])
    print(f"{'system':<{w}}{'UAR':>7}{'WA':>7}{'F1':>7}{'fold UAR':>16}{'params':>11}{'CV min':>10}")
    table = {}  # the printed rows, for --json
    for name, r in results.items():
        s = r["summary"]
        print(f"{name:<{w}}{s['pooled']['uar']:>7.3f}{s['pooled']['wa']:>7.3f}{s['pooled']['macro_f1']:>7.3f}"
              f"{s['uar_mean']:>9.3f} +-{s['uar_std']:.2f}{r['params']:>11,}{r['seconds'] / 60:>10.1f}")
        table[name] = {"UAR": s["pooled"]["uar"], "WA": s["pooled"]["wa"], "F1": s["pooled"]["macro_f1"],
                       "fold UAR": s["uar_mean"], "fold UAR std": s["uar_std"], "params": r["params"],
                       "CV min": round(r["seconds"] / 60, 1)}
    for title, m in fused.items():
        print(f"{'ensemble ' + title:<{w}}{m['uar']:>7.3f}{m['wa']:>7.3f}{m['macro_f1']:>7.3f}")
        table[f"ensemble {title}"] = {"UAR": m["uar"], "WA": m["wa"], "F1": m["macro_f1"]}
    for label, value in REFERENCES[args.corpus]:
        print(f"{label:<{w}}{value:>7.3f}")
    if args.json or not args.no_report:
        write_table(args, table, f"{args.corpus}, {protocol}, pooled over all held-out recordings", suffix)
    return 0


def selected(config: str, args, root: Path, run_name) -> dict:
    """Leave one speaker out with ``config``'s settings chosen for each held-out speaker among
    ``GRIDS[args.grid]`` by an inner leave-one-speaker-out over the other speakers alone (bench/_selection.py);
    each chosen candidate runs through ``emodet cv --folds loso`` and keeps the held-out speaker's predictions
    of its run. Returns the row of ``results``: pooled and per-speaker figures over the held-out speakers."""
    import numpy as np

    from emodet.data.prepare import load_rows

    cfgs = {name: load_config(REPO / "configs" / f"{config}.yaml",
                              [f"features.cache_dir={args.cache_dir}", *args.overrides, *extra], str(root))
            for name, extra in GRIDS[args.grid].items()}
    first = next(iter(cfgs.values()))
    rows, manifest, data_root = load_rows(first)  # the rows (and data.labels) emodet cv trains on
    labels = sorted({r["label"] for r in rows})
    mode = first.data.normalize
    if mode not in ("global", "corpus"):
        raise SystemExit(f"--select {config}: the inner fits normalise as data.normalize global or corpus do; this "
                         f"config's is {mode!r}")
    record = {"grid": args.grid, "config": config, "corpus": args.corpus}

    chosen = {}
    for speaker in sorted({r["speaker"] for r in rows}):
        inner = [r for r in rows if r["speaker"] != speaker]
        chosen[speaker], scores = choose(cfgs, inner, labels, "speaker", mode, data_root, manifest, args.runs_dir,
                                         {**record, "without": speaker})
        print(f"{config} without speaker {speaker}: chose {chosen[speaker]} (inner UAR {scores[chosen[speaker]]:.3f})",
              flush=True)
    kept, seconds, params = [], 0.0, 0
    for name in dict.fromkeys(chosen.values()):
        run = run_name(f"{config}~sel_{name}")
        summary = run_cv(cfgs[name], "loso", run, args.runs_dir, progress=False,
                         new_name_hint="pass another --runs-dir (this benchmark names its runs <corpus>_<config>)")
        mine = {s for s, c in chosen.items() if c == name}
        kept += [r for r in pooled_predictions(args.runs_dir / run).values() if r["speaker"] in mine]
        for f in summary["folds"]:
            if set(f["held_out_speakers"]) <= mine:
                m = json.loads((args.runs_dir / run / f"fold_{f['fold']:02d}" / "metrics.json").read_text())
                seconds, params = seconds + m["train_seconds"], max(params, m["parameters"])  # the largest chosen
    overall, everywhere = choose(cfgs, rows, labels, "speaker", mode, data_root, manifest, args.runs_dir,
                                 {**record, "without": None})
    print(f"{config} over all speakers: {overall} (LOSO UAR {everywhere[overall]:.3f}; the shipped settings' "
          f"candidate, if in the grid, is among those in selection.jsonl)", flush=True)
    # the held-out speakers' predictions as one LOSO directory's, so --ensemble can fuse them as a member
    from emodet.core.io import atomic_write_csv, atomic_write_json

    out = args.runs_dir / run_name(f"{config}~selected_{args.grid}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "predictions_pooled.csv", kept, list(kept[0]))
    atomic_write_json(out / "selection.json", {"grid": args.grid, "config": config, "chosen": chosen,
                                               "runs": sorted({run_name(f"{config}~sel_{c}") for c in chosen.values()}),
                                               "over_all_speakers": everywhere})
    index = {lab: i for i, lab in enumerate(labels)}
    pooled = classification_metrics([index[r["label"]] for r in kept], [index[r["predicted"]] for r in kept], labels)
    per = list(per_group_uar(kept, labels, "speaker").values())  # one speaker a fold: the folds' UARs
    summary = {"pooled": pooled, "uar_mean": float(np.mean(per)), "uar_std": float(np.std(per)), "chosen": chosen}
    return {"summary": summary, "seconds": seconds, "params": params, "labels": labels}


def write_table(args, rows: dict, title: str, suffix: str) -> None:
    """The printed table as JSON (``emodet report`` renders it with its references) and, unless --no-report,
    its HTML report beside it; a report that fails is a warning, never a failed benchmark."""
    from emodet.core.io import atomic_write_json

    path = args.json or args.runs_dir / f"accuracy_{args.corpus}{suffix}.json"
    atomic_write_json(path, {"title": title, "corpus": args.corpus, "folds": args.folds,
                             "columns": ["UAR", "WA", "F1", "fold UAR", "fold UAR std", "params", "CV min"],
                             "formats": {"fold UAR std": ".2f", "params": ",d", "CV min": ".1f"},
                             "rows": rows, "references": {k: {"UAR": v} for k, v in REFERENCES[args.corpus]}})
    print(f"table -> {path}", file=sys.stderr)  # stdout: the table alone, as before
    if not args.no_report:
        from emodet.evaluation.report import write_report

        try:
            print(f"report -> {write_report(path)}", file=sys.stderr)
        except Exception as exc:  # the benchmark's figures are printed and saved; the page is a convenience
            print(f"report not written ({type(exc).__name__}: {exc})", file=sys.stderr)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EmodetError as exc:  # a config, data or usage mistake: its message, not a traceback
        sys.exit(f"{Path(__file__).name}: error: {exc}")
