import csv
import json

import pytest

from emodet.cv import fold_manifest_rows
from emodet.data.corpora import prepare_corpus

from conftest import REPO, run_cli

FAST = ["--set", "training.epochs=2", "--set", "model.preset=tiny", "--no-progress"]


def test_fold_rows_hold_out_speakers_and_draw_validation_from_the_rest(synth_corpus):
    rows = prepare_corpus("folder", synth_corpus).rows
    fold = fold_manifest_rows(rows, {"spk02"}, 1, seed=0)
    split_of = {r["speaker"]: r["split"] for r in fold}
    assert split_of["spk02"] == "test"
    assert sorted(split_of.values()) == ["test", "train", "val"]


def test_loso_cv_every_speaker_tested_once_and_never_trained_on(tmp_path, synth_corpus):
    runs = tmp_path / "runs"
    out = run_cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
                  "--data-root", synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST)
    assert out.returncode == 0, out.stderr
    summary = json.loads((runs / "cv" / "cv_summary.json").read_text())
    held = [s for f in summary["folds"] for s in f["held_out_speakers"]]
    assert sorted(held) == ["spk01", "spk02", "spk03"]  # each speaker tested exactly once
    for f in summary["folds"]:
        fold_rows = list(csv.DictReader(open(runs / "cv" / f"fold_{f['fold']:02d}" / "manifest.csv")))
        train_val = {r["speaker"] for r in fold_rows if r["split"] in ("train", "val")}
        assert not set(f["held_out_speakers"]) & train_val
        assert not set(f["val_speakers"]) & set(f["held_out_speakers"])
    assert summary["pooled"]["n"] == 45 and sum(map(sum, summary["pooled"]["confusion_matrix"])) == 45
    uars = [f["uar"] for f in summary["folds"]]
    assert summary["uar_mean"] == pytest.approx(sum(uars) / 3)
    pooled = list(csv.DictReader(open(runs / "cv" / "predictions_pooled.csv")))
    assert len(pooled) == 45 and len({r["path"] for r in pooled}) == 45
    # a rerun retrains nothing
    again = run_cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
                    "--data-root", synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST)
    assert again.returncode == 0 and "parameters)" not in again.stdout
    assert json.loads((runs / "cv" / "cv_summary.json").read_text())["uar_mean"] == summary["uar_mean"]
    # a rerun with another recipe is refused, naming what differs, instead of mixing two recipes
    other = run_cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
                    "--data-root", synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}",
                    *FAST, "--set", "training.lr=0.1", "--set", "model.params.dropout=0.1")
    assert other.returncode == 2, other.stderr
    assert "another recipe (model.params, training.lr differ)" in other.stderr
    assert json.loads((runs / "cv" / "cv_summary.json").read_text())["uar_mean"] == summary["uar_mean"]


def test_kfold_request_larger_than_speakers_is_refused(tmp_path, synth_corpus):
    out = run_cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "5", "--run-name", "cv5",
                  "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", *FAST)
    assert out.returncode == 2 and "5 folds by speaker need at least 5 speakers; the data has 3" in out.stderr


def test_evaluate_and_ensemble_cli(tmp_path, synth_corpus):
    base = ["--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set", f"features.cache_dir={tmp_path / 'c'}",
            "--set", "data.split.val=1", "--set", "data.split.test=1", *FAST]
    for seed in (0, 1):
        assert run_cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", f"m{seed}", *base,
                       "--set", f"training.seed={seed}").returncode == 0
    ev = run_cli("evaluate", tmp_path / "runs" / "m0")
    assert ev.returncode == 0, ev.stderr
    result = json.loads((tmp_path / "runs" / "m0" / "eval_test.json").read_text())
    assert result["uar"] == json.loads((tmp_path / "runs" / "m0" / "metrics.json").read_text())["uar"]
    assert (tmp_path / "runs" / "m0" / "eval_test_confusion_matrix.png").is_file()
    seen = run_cli("evaluate", tmp_path / "runs" / "m0", "--split", "train")
    assert seen.returncode == 0 and "not speaker-independent" in seen.stdout
    ens = run_cli("ensemble", tmp_path / "runs" / "m0", tmp_path / "runs" / "m1", "--out", tmp_path / "ens", "--evaluate")
    assert ens.returncode == 0, ens.stderr
    assert "ensemble on test (15 recordings)" in ens.stdout
    spec = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert len(spec["runs"]) == 2 and spec["combine"] == "prob"
    # an ensemble directory is a distillation teacher
    student = run_cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "student", *base,
                      "--teacher", tmp_path / "ens")
    assert student.returncode == 0, student.stderr
    bad = run_cli("evaluate", tmp_path / "nothing")
    assert bad.returncode == 2 and "is not a finished run directory" in bad.stderr
