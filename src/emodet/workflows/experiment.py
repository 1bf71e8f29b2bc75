"""One experiment from a config: data -> features -> model -> train_loop -> test metrics -> run directory.

    run_experiment(load_config("configs/resnet_mfcc.yaml", data_root="..."), "resnet_mfcc_v1")

The run directory holds ``config.yaml`` (resolved), ``manifest.csv`` (with the split used),
``history.csv``, ``metrics.json``, ``checkpoints/{best,last}.pt``, ``confusion_matrix.png``,
``curves.png`` and TensorBoard events (``tb/``). With no test split (a final model trained on
every speaker) it holds no test figures and says so; it exports like any other run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from .. import __version__
from ..config import Config, check_data_root, check_training_start, config_differences, dump_config, load_config
from ..core.errors import UsageError
from ..core.io import atomic_write_json, atomic_write_text, remove_stale_temp_files
from ..data.prepare import (PreparedData, check_unlabelled, fit_normalizer, input_shape, make_loaders, prepare_data,
                            prepare_unlabelled)
from ..evaluation.evaluate import write_predictions
from ..evaluation.calibration import calibration_report
from ..evaluation.metrics import classification_metrics
from ..evaluation.plots import plot_confusion, plot_curves
from ..models import build_model, check_model_features, count_parameters
from ..training.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from ..evaluation.predict import predict_logits
from ..training.device import unwrap
from ..training.loop import train_loop
from ..training.teacher import RecordingTeacher, load_teacher

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def run_experiment(cfg: Config, run_name: str, runs_dir: str | Path = "runs", resume: bool = False,
                   progress: bool | None = None, distributed=None) -> dict:
    """Train and test one model; returns the metrics (also in ``metrics.json``; ``{}`` on DDP ranks > 0)."""
    run_dir = Path(runs_dir) / run_name
    is_main = distributed is None or distributed.is_main
    check_run_start(cfg, run_dir, resume)
    t0 = time.perf_counter()
    with removed_if_start_fails(run_dir, is_main and not resume):
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        data = _prepare_everywhere(cfg, run_dir, progress, distributed)
        by_split = {s: data.split(s) for s in SPLITS}
        by_split["train"] += data.augmented
        _check_selection(cfg, by_split)
        normalizer = fit_normalizer(cfg, data)  # of the labelled recordings
        unlabelled = prepare_unlabelled(cfg, data, progress if is_main else False)
        by_split["train"] += unlabelled
        teacher = load_teacher(cfg, data, by_split["train"], {r["speaker"] for r in by_split["test"]},
                               json.loads(json.dumps(normalizer.to_dict())))
        extras = list(teacher.logits) if isinstance(teacher, RecordingTeacher) else None
        loader_rows = {k: v for k, v in by_split.items() if v or k == "train"}  # no val: fixed epochs, nothing to watch
        if distributed is not None and by_split["val"]:  # validation over ranks, outputs gathered
            loader_rows["val"] = distributed.shard(by_split["val"])
        loaders = make_loaders(cfg, data, normalizer, loader_rows, distributed, train_extras=extras)
        shape = input_shape(data)
        seed_everything(cfg.training.seed)  # the initial weights depend on the seed alone
        model = build_model(cfg.model.name, len(data.labels), shape, cfg.model.preset, **cfg.model.params)
    training = cfg.training
    if distributed is not None:
        model = distributed.wrap(model)
        training = dataclasses.replace(training, device=str(distributed.device))
    if is_main:
        originals = [r for r in unlabelled if not r.get("variant")]
        log.info("%s: %s (%s, %s parameters) on %s; %d train%s / %d val / %d test recordings; labels %s", run_name,
                 cfg.model.name, cfg.model.preset, f"{count_parameters(model):,}", cfg.features.type,
                 len(by_split["train"]), _with(len(data.augmented), "augmented copies", len(originals),
                                               "unlabelled recordings", len(unlabelled) - len(originals),
                                               "augmented copies of them"),
                 len(by_split["val"]), len(by_split["test"]), ", ".join(data.labels))
    writer = _tensorboard(run_dir) if is_main else None
    labelled = [t for t in loaders["train"].dataset.targets if t >= 0]  # class weights: of labelled recordings
    result = train_loop(model, loaders["train"], loaders.get("val"), training, data.labels, targets=labelled,
                        run_dir=run_dir, resume=resume, teacher=teacher, progress=progress, writer=writer, is_main=is_main,
                        reduce_metrics=distributed.gather if distributed else None)
    if writer is not None:
        writer.close()
    if distributed is not None:
        distributed.barrier()  # rank 0's checkpoints are complete before anyone goes on
    if not is_main:
        return {}
    if distributed is not None:  # validation ran over ranks; the final figures use every recording
        loaders = make_loaders(cfg, data, normalizer, {k: v for k, v in by_split.items() if v and k != "train"})
    return _finish(cfg, run_name, run_dir, unwrap(model), data, by_split, loaders, normalizer, result, shape, t0)


def _with(*counted) -> str:
    """`` (with 972 augmented copies, 500 unlabelled recordings)`` of ``(972, "augmented copies", 500, ...)``,
    leaving out the zeros."""
    parts = [f"{n} {what}" for n, what in zip(counted[::2], counted[1::2]) if n]
    return f" (with {', '.join(parts)})" if parts else ""


def check_run_start(cfg: Config, run_dir: Path, resume: bool) -> None:
    """Refuse to start over a run (without ``--resume``) or to resume it with another config (naming the keys)."""
    check_data_root(cfg)  # before anything is written
    check_training_start(cfg)
    check_unlabelled(cfg)
    check_model_features(cfg.model.name, cfg.model.preset, cfg.model.params, cfg.features.type, cfg.features.params,
                         cfg.data.normalize)
    started = (run_dir / "checkpoints" / "last.pt").exists() or (run_dir / "metrics.json").exists()
    if started and not resume:
        raise UsageError(f"run directory {run_dir} already holds a run: pass --resume to continue it, "
                         "or choose another --run-name")
    if resume and run_dir.is_dir():
        remove_stale_temp_files(run_dir)  # what a killed run was writing when it died
    if resume and (run_dir / "config.yaml").exists():
        saved = load_config(run_dir / "config.yaml")  # defaults filled: a key added since the run started is no change
        differ = config_differences(saved, cfg)
        if differ:
            raise UsageError(f"--resume: the config differs from the one {run_dir} was started with ({', '.join(differ)}"
                             " differ); resume with no --set to use the run's own config.yaml, or start a new "
                             "--run-name for a new one")


@contextlib.contextmanager
def removed_if_start_fails(run_dir: Path, remove: bool, keep=lambda: False):
    """A start that fails before training (bad data, a refused teacher, Ctrl-C) leaves no run directory behind
    to block the retry: one this call created is removed, unless ``keep()`` says it holds work to resume."""
    existed = run_dir.exists()
    try:
        yield
    except BaseException:
        if remove and not existed and not keep():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _prepare_everywhere(cfg: Config, run_dir: Path, progress, distributed) -> PreparedData:
    """Rank 0 builds the feature cache first, the other ranks then read it; all must agree on the data."""
    is_main = distributed is None or distributed.is_main
    if distributed is not None and not is_main:
        distributed.barrier()
    data = prepare_data(cfg, run_dir if is_main else None, progress if is_main else False)
    if distributed is not None:
        if is_main:
            distributed.barrier()
        distributed.check_same("data", [(r["path"], r["label"], r["speaker"], r["split"]) for r in data.rows])
    return data


def _check_selection(cfg: Config, by_split: dict) -> None:
    es = cfg.training.early_stopping
    if not by_split["val"] and (es.select != "last" or es.patience > 0):
        raise UsageError("no validation speakers (data.split.val: 0): early stopping and model selection need them; "
                         "set data.split.val > 0, or train a fixed number of epochs with "
                         "training.early_stopping: {select: last, patience: 0}")


def _finish(cfg: Config, run_name: str, run_dir: Path, model, data: PreparedData, by_split: dict, loaders: dict,
            normalizer, result, shape: tuple, t0: float) -> dict:
    """Select the weights, compute validation and test figures, write metrics.json and the plots."""
    select = cfg.training.early_stopping.select  # "last": a fixed number of epochs, chosen beforehand
    if select == "last":
        save_checkpoint(run_dir / "checkpoints" / "best.pt", {"model": model.state_dict(), "epoch": result.epochs_run - 1,
                                                               "metric": "last", "value": float("nan")})
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    device = next(model.parameters()).device
    metrics = {"run": run_name, "emodet_version": __version__, "labels": data.labels,
               "best_epoch": result.best_epoch if select == "best" else result.epochs_run, "selected": select,
               "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
               "parameters": count_parameters(model), "normalize": cfg.data.normalize,
               "train_seconds": round(time.perf_counter() - t0, 1)}
    if cfg.data.normalize in ("speaker", "corpus"):
        metrics["normalize_note"] = (f"per-{cfg.data.normalize} normalisation: each test {cfg.data.normalize}'s features "
                                     f"were normalised with statistics of that {cfg.data.normalize}'s own unlabelled "
                                     "test recordings")
    outputs = {}
    for split in ("val", "test"):
        if split in loaders:
            logits, targets = outputs[split] = predict_logits(model, loaders[split], device, cfg.training.amp)
            m = classification_metrics(targets.numpy(), logits.argmax(1).numpy(), data.labels)
            m["speakers"] = sorted({r["speaker"] for r in by_split[split]})
            metrics[split] = m
            write_predictions(run_dir / f"predictions_{split}.csv", by_split[split], logits, data.labels)
    metrics["calibration"] = _calibration(outputs)
    if "test" in metrics:  # the design's contract: test figures at the top level
        metrics.update({k: metrics["test"][k] for k in ("uar", "wa", "macro_f1", "confusion_matrix", "per_class")})
    else:
        metrics["no_test_note"] = ("no test split (data.split.test: 0): a final model trained on every speaker; "
                                   "it has no test figures (cross-validate the recipe for them: emodet cv)")
    metrics["model"] = {"name": cfg.model.name, "preset": cfg.model.preset, "params": cfg.model.params,
                        "input_shape": list(shape)}
    metrics["features"] = {"type": data.cache.feature, "params": data.cache.params, "sample_rate": data.cache.sr}
    metrics["normalizer"] = normalizer.to_dict()
    metrics["skipped_files"] = len(data.skipped)
    if data.augmented:
        metrics["augmented_copies"] = {v: sum(1 for r in data.augmented if r["variant"] == v) for v in data.variant_caches}
    unlabelled = [r for r in by_split["train"] if r.get("unlabelled")]
    if unlabelled:
        copies = sum(1 for r in unlabelled if r.get("variant"))
        metrics["unlabelled"] = {"recordings": len(unlabelled) - copies, "augmented_copies": copies}
    atomic_write_json(run_dir / "metrics.json", metrics)
    shown = next((s for s in ("test", "val") if s in metrics), None)
    if shown:
        plot_confusion(metrics[shown]["confusion_matrix"], data.labels, run_dir / "confusion_matrix.png",
                       f"{run_name}: {shown} UAR {metrics[shown]['uar']:.3f}")
    if result.history:
        plot_curves(result.history, run_dir / "curves.png", run_name)
    return metrics


def _calibration(outputs: dict) -> dict:
    """Temperature scaling fitted on the validation predictions, judged on the test ones (or on the same)."""
    if "val" not in outputs:
        return {"temperature": 1.0, "fitted_on": None,
                "note": "no validation split to fit a temperature on; `emodet calibrate RUN --from CV_DIR` fits one "
                        "on a cross-validation's pooled held-out predictions"}
    fit = [t.numpy() for t in outputs["val"]]
    judged = [t.numpy() for t in outputs.get("test", outputs["val"])]
    return calibration_report(*fit, *judged, fitted_on="val")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the run still has history.csv and curves.png
        return None
    return SummaryWriter(str(run_dir / "tb"))
