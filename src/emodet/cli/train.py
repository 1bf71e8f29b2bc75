"""``emodet train | cv | evaluate | ensemble | demo``: experiments and their figures."""

from __future__ import annotations

from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, add_config_args, examples, figures, progress_of
from .report import add_no_report, report_or_warn


def config_from_args(args):
    """The config of a train or cv command: --config, then --set, --teacher/--distill-weight/--unlabelled,
    --data-root."""
    from ..config import load_config

    overrides = list(args.overrides or [])
    if getattr(args, "teacher", None):
        overrides.append(f"training.distill.teacher={args.teacher}")
    if getattr(args, "distill_weight", None) is not None:
        overrides.append(f"training.distill.weight={args.distill_weight}")
    if getattr(args, "unlabelled", None):
        overrides.append(f"training.distill.unlabelled={args.unlabelled}")
    return load_config(args.config, overrides, args.data_root)


# -- emodet train ----------------------------------------------------------------------------
def add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train and test one model from an experiment config",
        description="Train one model: parse the corpus (or read data.manifest), split it by speaker, build the "
                    "feature cache, train, and test on the held-out speakers. data.split.test: 0 trains a final "
                    "model on every speaker (no test figures; cross-validate the recipe for those).",
        epilog=examples("emodet train --config configs/cnn_logmel.yaml --run-name cnn_v1 --data-root my_corpus/",
                        "emodet train --config configs/cnn_logmel.yaml --run-name final --data-root my_corpus/ "
                        "--set data.split.test=0",
                        "emodet train --config configs/general.yaml --run-name g --set data.manifest=m.csv",
                        "emodet train --run-name cnn_v1 --resume          # continue a stopped run with its own config"))
    add_config_args(p, config_required=False)
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its last checkpoint (with no --set, its own saved config.yaml is used)")
    add_distill_args(p)
    add_no_report(p)
    p.set_defaults(func=cmd_train)


def add_distill_args(p) -> None:
    p.add_argument("--teacher", metavar="RUN_DIR", help="run, ensemble or cv directory to distil from (a cv: "
                   "its fold holding out the same speakers; sets training.distill.teacher)")
    p.add_argument("--distill-weight", type=float, metavar="W", help="weight of the distillation loss in [0, 1] "
                   "(sets training.distill.weight)")
    p.add_argument("--unlabelled", metavar="DIR|CSV", help="recordings without labels the teacher labels for the "
                   "student: a folder or a CSV with a path column (sets training.distill.unlabelled; "
                   "training.distill.unlabelled_max draws a subset)")


def cmd_train(args) -> int:
    from ..config import config_differences, load_config
    from ..core.errors import UsageError
    from ..training.distributed import maybe_init_distributed
    from ..workflows.experiment import run_experiment

    run_dir = Path(args.runs_dir) / args.run_name
    args.interrupt_hint = (f"continue it with: emodet train --run-name {args.run_name} --resume"
                           + (f" --runs-dir {args.runs_dir}" if args.runs_dir != "runs" else ""))
    saved = run_dir / "config.yaml"
    if args.resume and saved.is_file() and not (args.overrides or args.data_root or args.teacher
                                                or args.distill_weight is not None or args.unlabelled):
        cfg = load_config(saved)  # the run's own config: a resume needs nothing repeated
        if args.config and config_differences(load_config(args.config), cfg):
            print(f"resuming {run_dir} with its own config.yaml (--config {args.config} differs: "
                  f"{', '.join(config_differences(load_config(args.config), cfg))})")
    elif args.config:
        cfg = config_from_args(args)
    else:
        raise UsageError("emodet train needs --config FILE" + (f" ({saved} does not exist to resume from)"
                                                               if args.resume else ""))
    dist = maybe_init_distributed(cfg)
    try:
        metrics = run_experiment(cfg, args.run_name, args.runs_dir, resume=args.resume, progress=progress_of(args),
                                 distributed=dist)
    finally:
        if dist is not None:
            dist.close()
    if not metrics:
        return EXIT_OK
    if "test" in metrics:
        print(f"{args.run_name}: test {figures(metrics['test'])}  (selected epoch {metrics['best_epoch']}, "
              f"speakers held out: {', '.join(metrics['test']['speakers'])}) -> {run_dir}")
    else:
        print(f"{args.run_name}: trained on every speaker (no test split, so no test figures; `emodet cv` gives the "
              f"recipe's speaker-independent figure) -> {run_dir}; export it with: emodet export {run_dir} --out "
              f"{args.run_name}.onnx")
    report_or_warn(run_dir, args)
    return EXIT_FAILED if metrics.get("skipped_files") else EXIT_OK


# -- emodet cv -------------------------------------------------------------------------------
def add_cv(sub) -> None:
    p = sub.add_parser(
        "cv", help="speaker-independent cross-validation (k folds, leave one speaker out, or one corpus out)",
        description="Train one model a fold, the fold's speakers held out (validation speakers drawn from the "
                    "others), and pool the held-out predictions: the recipe's speaker-independent figure. A rerun "
                    "retrains nothing; a cut fold resumes; another recipe under the same name is refused.",
        epilog=examples("emodet cv --config configs/fc_compare.yaml --folds loso --run-name fc_loso --data-root E",
                        "emodet cv --config configs/cnn_logmel.yaml --folds 5 --run-name cnn_5fold --data-root D",
                        "emodet cv --config configs/general.yaml --folds corpus --run-name loco --set "
                        "data.manifest=three.csv",
                        "emodet cv --config configs/edge_student.yaml --folds loso --run-name s --data-root E "
                        "--teacher runs/general_loso --unlabelled other_recordings/"))
    add_config_args(p)
    p.add_argument("--folds", required=True, metavar="loso|corpus|K",
                   help="'loso' (leave one speaker out), 'corpus' (leave one corpus out: a manifest's corpus "
                        "column) or a number of folds by speaker")
    add_distill_args(p)
    add_no_report(p)
    p.set_defaults(func=cmd_cv)


def cmd_cv(args) -> int:
    from ..workflows.cv import run_cv

    args.interrupt_hint = "rerun the same command to resume: finished folds are kept, a cut fold continues"
    summary = run_cv(config_from_args(args), args.folds, args.run_name, args.runs_dir, progress=progress_of(args))
    cv_dir = Path(args.runs_dir) / args.run_name
    from ..evaluation.report_parts import folds_phrase

    print(f"{args.run_name}: {folds_phrase(summary['n_folds'], args.folds)}; UAR {summary['uar_mean']:.3f} +- "
          f"{summary['uar_std']:.3f} over folds; pooled {figures(summary['pooled'])} -> {cv_dir / 'cv_summary.json'} "
          f"(plots: confusion_matrix.png, per_speaker_uar.png)")
    report_or_warn(cv_dir, args)
    return EXIT_OK


# -- emodet evaluate / ensemble --------------------------------------------------------------
def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a run or ensemble directory on a manifest split",
        description="Figures of a trained model on its own test split, or on another manifest (another corpus: "
                    "written to eval_<manifest>_<split>.json, never over the run's own eval_test.json).",
        epilog=examples("emodet evaluate runs/cnn_v1", "emodet evaluate runs/general --manifest nemo.csv "
                        "--data-root ../shared/datasets/nemo --split all"))
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (emodet train) or an ensemble directory")
    p.add_argument("--manifest", metavar="CSV", help="manifest to evaluate on (default: the run's own manifest.csv)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                   help="which rows of the manifest (default: test; 'all' for a corpus the model never saw)")
    p.add_argument("--data-root", metavar="DIR",
                   help="folder the manifest's paths are relative to (default: the run's data.root for its own "
                        "manifest, the manifest's folder for another)")
    p.add_argument("--out", metavar="JSON", help="where to write the figures (the predictions CSV and confusion "
                   "PNG go beside it)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from ..evaluation.evaluate import evaluate_directory

    m = evaluate_directory(args.run_dir, args.manifest, args.split, args.data_root, out=args.out)
    print(f"{args.run_dir} on {args.split} ({m['n']} recordings, speakers {', '.join(m['speakers'])}): {figures(m)}")
    for lab, pc in m["per_class"].items():
        print(f"  {lab:<10} precision {pc['precision']:.3f}  recall {pc['recall']:.3f}  F1 {pc['f1']:.3f}  "
              f"n {pc['support']}")
    c = m["calibration"]
    print(f"  calibration: ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}, Brier {c['brier_before']:.3f} -> "
          f"{c['brier_after']:.3f} with the run's temperature {c['temperature']:.2f}")
    print(f"  -> {m['written']}")
    return EXIT_OK


def add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="fit a run's confidence (temperature scaling) on held-out predictions",
        description="A network's softmax is over-confident. This fits one temperature on predictions of recordings "
                    "the run never trained on and stores it in the run's metrics.json; exports made after it "
                    "carry it, and every confidence the runtime gives is then honest. `emodet train` already fits one "
                    "on the validation split when there is one.",
        epilog=examples("emodet calibrate runs/mine_final --from runs/mine_cv     # a cross-validation of the same recipe",
                        "emodet calibrate runs/cnn_v1 --manifest held_out.csv --data-root D"))
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (emodet train)")
    p.add_argument("--from", dest="from_cv", metavar="CV_DIR", help="a cross-validation of the same recipe: its pooled "
                   "held-out predictions")
    p.add_argument("--manifest", metavar="CSV", help="recordings the run never trained on")
    p.add_argument("--split", default="all", choices=("train", "val", "test", "all"), help="rows of --manifest (default: all)")
    p.add_argument("--data-root", metavar="DIR", help="folder --manifest's paths are relative to")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from ..evaluation.evaluate import calibrate_run

    c = calibrate_run(args.run_dir, args.from_cv, args.manifest, args.split, args.data_root)
    print(f"{args.run_dir}: temperature {c['temperature']:.3f} (fitted on {c['fitted_on']}, {c['n_fit']} recordings); "
          f"ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}, Brier {c['brier_before']:.3f} -> {c['brier_after']:.3f}; "
          f"export the run again to carry it")
    return EXIT_OK


def add_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="combine several runs into one model",
                       description="An ensemble directory averages its members' probabilities (or logits); it "
                                   "works wherever a run does: evaluate, export, as a distillation teacher.",
                       epilog=examples("emodet ensemble runs/a runs/b runs/c --out runs/abc --weights 2,1,1 --evaluate"))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories sharing labels, features and split")
    p.add_argument("--out", required=True, metavar="DIR", help="ensemble directory to write")
    p.add_argument("--weights", help="comma-separated weights, one a run (default: equal)")
    p.add_argument("--combine", choices=("prob", "logit"), default="prob",
                   help="average probabilities (default) or logits")
    p.add_argument("--evaluate", action="store_true", help="evaluate the ensemble on the runs' test split")
    p.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args) -> int:
    from ..core.errors import UsageError
    from ..runs import create_ensemble

    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    except ValueError:
        raise UsageError(f"--weights {args.weights!r}: give comma-separated numbers, one a run, e.g. 2,1,1") from None
    spec = create_ensemble(args.runs, args.out, weights, args.combine)
    print(f"ensemble of {len(spec['runs'])} runs ({args.combine} averaging, weights {spec['weights']}) -> "
          f"{Path(args.out) / 'ensemble.json'}")
    if args.evaluate:
        from ..evaluation.evaluate import evaluate_directory

        m = evaluate_directory(args.out, None, "test", refuse_seen_speakers=True)
        print(f"ensemble on test ({m['n']} recordings): {figures(m)}")
    return EXIT_OK


# -- emodet demo -----------------------------------------------------------------------------
def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole path on a built-in synthetic corpus (no download)",
                       epilog=examples("emodet demo", "emodet demo --out /tmp/d --speakers 4 --epochs 2"))
    p.add_argument("--out", default="emodet-demo", metavar="DIR",
                   help="folder for corpus, cache and runs (default: ./emodet-demo)")
    p.add_argument("--per-class", type=int, default=12, help="utterances per class and speaker (default: 12)")
    p.add_argument("--speakers", type=int, default=8, help="number of speakers (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--epochs", type=int, help="epochs of each demo model (default: the demo's own)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..workflows.demo import run_demo

    return run_demo(args.out, per_class=args.per_class, speakers=args.speakers, seed=args.seed, epochs=args.epochs)
