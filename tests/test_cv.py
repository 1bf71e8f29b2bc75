import csv
import dataclasses
import json
import shutil

import pytest

from emodet.workflows.cv import fold_manifest_rows
from emodet.data.corpora import prepare_corpus

from conftest import REPO, cli

FAST = ["--set", "training.epochs=2", "--set", "model.preset=tiny", "--no-progress"]


def test_fold_rows_hold_out_speakers_and_draw_validation_from_the_rest(synth_corpus):
    rows = prepare_corpus("folder", synth_corpus).rows
    fold = fold_manifest_rows(rows, {"spk02"}, 1, seed=0)
    split_of = {r["speaker"]: r["split"] for r in fold}
    assert split_of["spk02"] == "test"
    assert sorted(split_of.values()) == ["test", "train", "val"]


def test_loso_cv_every_speaker_tested_once_and_never_trained_on(tmp_path, synth_corpus):
    runs = tmp_path / "runs"
    out = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
                  "--data-root", synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST)
    assert out.returncode == 0, out.stderr
    assert "cv: 3 folds (loso); UAR" in out.stdout
    assert out.stderr.count("the validation split is too small") == 1  # each fold warns it; said once
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
    again = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
                    "--data-root", synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST)
    assert again.returncode == 0 and "parameters)" not in again.stdout
    assert "fold 2/3 (fold_01): held out" in again.stderr + again.stdout  # the log names the fold's folder
    rerun = json.loads((runs / "cv" / "cv_summary.json").read_text())
    assert rerun["uar_mean"] == summary["uar_mean"]
    assert rerun["seconds"] >= summary["seconds"] > 0  # the first run's time is kept, not reset to the rerun's
    # a rerun with another recipe is refused, naming what differs, instead of mixing two recipes
    other = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
                    "--data-root", synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}",
                    *FAST, "--set", "training.lr=0.1", "--set", "model.params.dropout=0.1")
    assert other.returncode == 2, other.stderr
    assert "another recipe (model.params, training.lr differ)" in other.stderr
    assert json.loads((runs / "cv" / "cv_summary.json").read_text())["uar_mean"] == summary["uar_mean"]
    # a cross-validation started before emodet had an option (here training.augment.speed) ran with its
    # default: a rerun at the default continues it, one that sets the option is another recipe
    saved = json.loads((runs / "cv" / "cv_config.json").read_text())
    del saved["recipe"]["training"]["augment"]["speed"]
    (runs / "cv" / "cv_config.json").write_text(json.dumps(saved))
    older = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
                    "--data-root", synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST)
    assert older.returncode == 0 and "parameters)" not in older.stdout, older.stderr
    sped = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
                   "--data-root", synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}",
                   *FAST, "--set", "training.augment.speed=[0.9, 1.1]")
    assert sped.returncode == 2 and "another recipe (training.augment differs)" in sped.stderr, sped.stderr


def test_fixed_epoch_recipe_trains_on_every_speaker_but_the_held_out_one(tmp_path, synth_corpus):
    """data.split.val: 0 with a fixed number of epochs: no validation speaker is set aside in any fold."""
    runs, common = tmp_path / "runs", ["--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set",
                                       f"features.cache_dir={tmp_path / 'c'}", *FAST, "--set", "data.split.val=0"]
    refused = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "sel",
                      *common)  # fc_mfcc picks its best epoch on validation speakers
    assert refused.returncode == 2, refused.stderr
    assert "no validation speakers (data.split.val: 0)" in refused.stderr and "select: last" in refused.stderr
    out = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "fixed",
                  *common, "--set", "training.early_stopping.select=last", "--set", "training.early_stopping.patience=0")
    assert out.returncode == 0, out.stderr
    summary = json.loads((runs / "fixed" / "cv_summary.json").read_text())
    for f in summary["folds"]:
        assert f["val_speakers"] == []
        rows = list(csv.DictReader(open(runs / "fixed" / f"fold_{f['fold']:02d}" / "manifest.csv")))
        train = {r["speaker"] for r in rows if r["split"] == "train"}
        assert train == {"spk01", "spk02", "spk03"} - set(f["held_out_speakers"])
        assert {r["split"] for r in rows} == {"train", "test"}
        metrics = json.loads((runs / "fixed" / f"fold_{f['fold']:02d}" / "metrics.json").read_text())
        assert "val" not in metrics and metrics["best_epoch"] == metrics["epochs_run"] == 2
    assert summary["pooled"]["n"] == 45


def test_kfold_request_larger_than_speakers_is_refused(tmp_path, synth_corpus):
    out = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "5", "--run-name", "cv5",
                  "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", *FAST)
    assert out.returncode == 2 and "5 folds by speaker need at least 5 speakers; the data has 3" in out.stderr
    three = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "3", "--run-name", "cv3",
                "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set",
                f"features.cache_dir={tmp_path / 'c'}", *FAST)
    assert three.returncode == 0 and "cv3: 3 folds; UAR" in three.stdout, three.stderr  # not "3 folds (3)"
    # a value only a fold can check (NAP needs more training speakers than directions): refused in the first
    # fold, and no folder left behind to block the corrected rerun under the same name
    nap = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv_nap",
              "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set", "data.nap=2", "--set",
              "data.split.val=0", "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST)
    assert nap.returncode == 2 and "data.nap 2:" in nap.stderr and "set data.nap to at most 1" in nap.stderr, nap.stderr
    assert not (tmp_path / "runs" / "cv_nap").exists()


def test_evaluate_and_ensemble_cli(tmp_path, synth_corpus):
    base = ["--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set", f"features.cache_dir={tmp_path / 'c'}",
            "--set", "data.split.val=1", "--set", "data.split.test=1", *FAST]
    for seed in (0, 1):
        assert cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", f"m{seed}", *base,
                       "--set", f"training.seed={seed}").returncode == 0
    ev = cli("evaluate", tmp_path / "runs" / "m0")
    assert ev.returncode == 0, ev.stderr
    result = json.loads((tmp_path / "runs" / "m0" / "eval_test.json").read_text())
    assert result["uar"] == json.loads((tmp_path / "runs" / "m0" / "metrics.json").read_text())["uar"]
    assert (tmp_path / "runs" / "m0" / "eval_test_confusion_matrix.png").is_file()
    seen = cli("evaluate", tmp_path / "runs" / "m0", "--split", "train")
    assert seen.returncode == 0 and "not speaker-independent" in seen.stderr
    # m1 as a run from before features.params.ref existed: still the same features as m0
    metrics = tmp_path / "runs" / "m1" / "metrics.json"
    m = json.loads(metrics.read_text())
    assert m["features"]["params"].pop("ref") is None
    metrics.write_text(json.dumps(m))
    twice = cli("ensemble", tmp_path / "runs" / "m0", tmp_path / "runs" / "m0", "--out", tmp_path / "ens")
    assert twice.returncode == 2 and "m0 given more than once" in twice.stderr and not (tmp_path / "ens").exists()
    ens = cli("ensemble", tmp_path / "runs" / "m0", tmp_path / "runs" / "m1", "--out", tmp_path / "ens", "--evaluate")
    assert ens.returncode == 0, ens.stderr
    assert "ensemble on test (15 recordings)" in ens.stdout
    spec = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert len(spec["runs"]) == 2 and spec["combine"] == "prob"
    # an ensemble directory is a distillation teacher
    student = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "student", *base,
                      "--teacher", tmp_path / "ens")
    assert student.returncode == 0, student.stderr
    bad = cli("evaluate", tmp_path / "nothing")
    assert bad.returncode == 2 and "is not a finished run directory" in bad.stderr


def test_distillation_fold_by_fold_from_a_teacher_on_other_features(tmp_path, synth_corpus):
    """A log-mel CNN learns from an MLP on MFCC statistics: each student fold takes the teacher fold
    that held out the same speaker, and the teacher's logits are computed from its own features."""
    import torch

    from emodet.config import load_config
    from emodet.data.prepare import prepare_data
    from emodet.training.teacher import BatchTeacher, RecordingTeacher, load_teacher, resolve_teacher

    runs = tmp_path / "runs"
    common = ["--folds", "loso", "--data-root", synth_corpus, "--runs-dir", runs,
              "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST]
    assert cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "t", *common).returncode == 0
    student = cli("cv", "--config", REPO / "configs" / "resnet_logmel.yaml", "--run-name", "s", *common,
                      "--set", f"training.distill.teacher={runs / 't'}", "--set", "training.distill.weight=0.9")
    assert student.returncode == 0, student.stderr
    for fold in range(3):
        held = json.loads((runs / "s" / f"fold_{fold:02d}" / "metrics.json").read_text())["test"]["speakers"]
        assert resolve_teacher(runs / "t", set(held)) == runs / "t" / f"fold_{fold:02d}"
    # the teacher's logits for the training recordings of fold 0: its own features, its labels' order
    cfg = load_config(runs / "s" / "fold_00" / "config.yaml")
    data = prepare_data(cfg)
    train = [r for r in data.rows if r["split"] == "train"]
    test = {r["speaker"] for r in data.rows if r["split"] == "test"}
    def teacher_of(spec, normalizer):
        with_teacher = dataclasses.replace(cfg, training=dataclasses.replace(
            cfg.training, distill=dataclasses.replace(cfg.training.distill, teacher=str(spec))))
        return load_teacher(with_teacher, data, train, test, normalizer)

    teacher = teacher_of(runs / "t", {"mode": "speaker"})
    assert isinstance(teacher, RecordingTeacher) and teacher.logits.shape == (len(train), len(data.labels))
    # the same as evaluating the teacher's fold on those recordings through `emodet evaluate`
    manifest = tmp_path / "student_fold0.csv"
    manifest.write_text((runs / "s" / "fold_00" / "manifest.csv").read_text())
    ev = cli("evaluate", runs / "t" / "fold_00", "--manifest", manifest, "--split", "train", "--data-root", synth_corpus)
    assert ev.returncode == 0, ev.stderr
    pred = list(csv.DictReader(open(next((runs / "t" / "fold_00").glob("eval_student_fold0_train_predictions.csv")))))
    assert [r["path"] for r in pred] == [r["path"] for r in train]
    probs = torch.softmax(teacher.logits, 1)
    expected = torch.tensor([[float(r[f"p_{lab}"]) for lab in data.labels] for r in pred])
    assert torch.allclose(probs, expected, atol=1e-5)
    # a teacher on the student's features and normalisation runs on the student's batches; a different
    # normalisation makes it a per-recording teacher with its own inputs
    same = teacher_of(runs / "s", {"mode": "speaker"})
    assert isinstance(same, BatchTeacher)
    # so is one trained before features.params.ref existed (its stored parameters lack the key)
    shutil.copytree(runs / "s", runs / "s_old")
    for metrics in (runs / "s_old").glob("fold_*/metrics.json"):
        m = json.loads(metrics.read_text())
        assert m["features"]["params"].pop("ref") is None
        metrics.write_text(json.dumps(m))
    assert isinstance(teacher_of(runs / "s_old", {"mode": "speaker"}), BatchTeacher)
    other_norm = teacher_of(runs / "s", {"mode": "none"})
    assert isinstance(other_norm, RecordingTeacher) and other_norm.logits.shape == (len(train), len(data.labels))
    # a teacher that saw the student's test speaker is refused
    leaky = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "leaky", "--data-root",
                    synth_corpus, "--runs-dir", runs, "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST,
                    "--set", "data.split.val=1", "--set", "data.split.test=0")
    assert leaky.returncode == 0, leaky.stderr
    refused = cli("cv", "--config", REPO / "configs" / "resnet_logmel.yaml", "--run-name", "s2", *common,
                      "--set", f"training.distill.teacher={runs / 'leaky'}")
    assert refused.returncode == 2 and "was trained on test speaker(s)" in refused.stderr
