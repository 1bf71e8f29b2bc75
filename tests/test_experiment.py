import csv
import json
import subprocess
import sys

import pytest


from conftest import REPO, Cut, cli, cut_after_epoch

FAST = ["--set", "training.epochs=2", "--set", "data.split.val=1", "--set", "data.split.test=1",
        "--set", "model.preset=tiny", "--no-progress"]


def test_train_writes_a_complete_run_directory(tmp_path, synth_corpus):
    out = cli("train", "--config", REPO / "configs" / "resnet_logmel.yaml", "--run-name", "r1",
                  "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs",
                  "--set", f"features.cache_dir={tmp_path / 'cache'}", *FAST)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "runs" / "r1"
    for name in ("config.yaml", "history.csv", "metrics.json", "manifest.csv", "checkpoints/best.pt",
                 "checkpoints/last.pt", "confusion_matrix.png", "curves.png"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("uar", "wa", "macro_f1", "labels", "confusion_matrix", "per_class"):
        assert key in metrics
    assert sum(map(sum, metrics["confusion_matrix"])) == 15  # one test speaker x 15 files
    assert len(list(csv.DictReader(open(run / "history.csv")))) == 2
    manifest = list(csv.DictReader(open(run / "manifest.csv")))
    test_speakers = {r["speaker"] for r in manifest if r["split"] == "test"}
    assert set(metrics["test"]["speakers"]) == test_speakers and len(test_speakers) == 1
    assert not test_speakers & {r["speaker"] for r in manifest if r["split"] != "test"}
    assert "test UAR" in out.stdout
    again = cli("train", "--config", REPO / "configs" / "resnet_logmel.yaml", "--run-name", "r1",
                    "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", *FAST)
    assert again.returncode == 2 and "already holds a run: pass --resume" in again.stderr


def test_original_entry_point_and_config_errors(tmp_path, synth_corpus):
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "run_experiment.py"), "--config",
                          str(REPO / "configs" / "fc_mfcc.yaml"), "--run-name", "fc1", "--data-root", str(synth_corpus),
                          "--runs-dir", str(tmp_path / "runs"), "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    placeholder = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "x", "--runs-dir",
                          tmp_path / "runs")
    assert placeholder.returncode == 2
    assert "data.root is a placeholder ('DATA_ROOT_PLACEHOLDER'): pass --data-root DIR" in placeholder.stderr
    assert "Traceback" not in placeholder.stderr
    assert not (tmp_path / "runs" / "x").exists()  # nothing written for a failed start
    typo = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "x", "--data-root",
                   synth_corpus, "--runs-dir", tmp_path / "runs", "--set", "training.batchsize=4")
    assert typo.returncode == 2 and "did you mean 'training.batch_size'" in typo.stderr


def test_resume_continues_a_finished_or_cut_run(tmp_path, synth_corpus):
    args = ["train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "fc2", "--data-root", synth_corpus,
            "--runs-dir", tmp_path / "runs", "--set", f"features.cache_dir={tmp_path / 'c'}", *FAST]
    assert cli(*args).returncode == 0
    first = json.loads((tmp_path / "runs" / "fc2" / "metrics.json").read_text())
    saved = tmp_path / "runs" / "fc2" / "config.yaml"  # a run started before a config key existed still resumes
    saved.write_text(saved.read_text().replace(", select: best", ""))
    assert "select" not in saved.read_text()
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "runs" / "fc2" / "metrics.json").read_text())["uar"] == first["uar"]
    changed = cli(*args[:-1], "--no-progress", "--set", "training.lr=0.5", "--resume")
    assert changed.returncode == 2 and "config differs" in changed.stderr


def test_distillation_from_a_run_directory(tmp_path, synth_corpus):
    base = ["--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set", f"features.cache_dir={tmp_path / 'c'}"]
    assert cli("train", "--config", REPO / "configs" / "resnet_logmel.yaml", "--run-name", "teacher",
                   *base, *FAST).returncode == 0
    out = cli("train", "--config", REPO / "configs" / "resnet_logmel.yaml", "--run-name", "student", *base, *FAST,
                  "--teacher", tmp_path / "runs" / "teacher", "--distill-weight", "0.7")
    assert out.returncode == 0, out.stderr
    cfg = (tmp_path / "runs" / "student" / "config.yaml").read_text()
    assert "weight: 0.7" in cfg and "teacher" in cfg
    bad = cli("train", "--config", REPO / "configs" / "resnet_logmel.yaml", "--run-name", "s2", *base, *FAST,
                  "--teacher", tmp_path / "nothing")
    assert bad.returncode == 2 and "is not a finished run directory" in bad.stderr


def test_select_last_uses_the_final_weights(tmp_path, synth_corpus):
    from emodet.config import load_config
    from emodet.workflows.experiment import run_experiment

    cfg = load_config(REPO / "configs" / "fc_mfcc.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.val=1", "data.split.test=1",
        "training.epochs=3", "training.early_stopping.select=last", f"features.cache_dir={tmp_path / 'c'}"])
    metrics = run_experiment(cfg, "last", tmp_path / "runs", progress=False)
    import torch

    best = torch.load(tmp_path / "runs" / "last" / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "runs" / "last" / "checkpoints" / "last.pt", weights_only=True)
    assert metrics["selected"] == "last" and metrics["best_epoch"] == 3
    for key, value in last["model"].items():
        assert torch.equal(best["model"][key], value)


def test_speed_perturbation_adds_training_copies_only(tmp_path, synth_corpus):
    import numpy as np

    from emodet.config import load_config
    from emodet.data.prepare import fit_normalizer, prepare_data
    from emodet.workflows.experiment import run_experiment

    cfg = load_config(REPO / "configs" / "fc_mfcc.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.val=1", "data.split.test=1",
        "data.normalize=speaker", "training.epochs=2", "training.augment.speed=[0.9, 1.1]",
        f"features.cache_dir={tmp_path / 'c'}"])
    data = prepare_data(cfg, progress=False)
    train = [r for r in data.rows if r["split"] == "train"]
    assert len(data.augmented) == 2 * len(train) and len(data.rows) == 45  # the rows themselves unchanged
    assert {r["path"] for r in data.augmented} == {r["path"] for r in train}
    assert {(r["speaker"], r["speed"]) for r in data.augmented} == {(r["speaker"], f) for r in train for f in (0.9, 1.1)}
    for name, cache in data.variant_caches.items():  # a folder of their own, training files only
        assert name == f"speed{cache.speed:g}" and json.loads((cache.dir / "config.json").read_text())["speed"] == cache.speed
        assert len(list(cache.dir.glob("*/*.npy"))) == len(train)
    row = train[0]
    slow, plain = data.load({**row, "variant": "speed0.9"}), data.load(row)
    assert slow.shape[1] > plain.shape[1]  # 10% slower: more frames
    normalizer = fit_normalizer(cfg, data)  # each (speaker, factor) its own statistics
    assert set(normalizer.groups) == {r["speaker"] for r in data.rows} | {f"{r['speaker']}@speed{f}" for r in train
                                                                          for f in ("0.9", "1.1")}
    assert not np.allclose(normalizer.groups[row["speaker"]][0], normalizer.groups[row["speaker"] + "@speed0.9"][0])
    metrics = run_experiment(cfg, "sp", tmp_path / "runs", progress=False)
    assert metrics["augmented_copies"] == {"speed0.9": len(train), "speed1.1": len(train)}
    manifest = list(csv.DictReader(open(tmp_path / "runs" / "sp" / "manifest.csv")))
    assert len(manifest) == 45 and not any("@" in r["speaker"] for r in manifest)


@pytest.mark.slow
def test_a_teacher_on_other_features_sees_augmented_copies_augmented_alike(tmp_path, trained_runs, synth_corpus):
    """An MLP on MFCC statistics teaching a log-mel student trained with a noisy copy of each recording: the
    teacher's outputs for a copy come from its own features of the same noisy audio, or with
    ``training.distill.copy_targets: clean`` from the clean recording the copy came from."""
    import dataclasses

    import numpy as np

    from emodet.config import load_config
    from emodet.data.prepare import fit_normalizer, prepare_data
    from emodet.training.teacher import RecordingTeacher, load_teacher

    cfg = load_config(REPO / "configs" / "edge_dscnn.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.test=1", "model.preset=tiny",
        "training.augment.waveform.copies=1", "training.augment.waveform.reverb=0", "training.augment.waveform.codec=0",
        "training.augment.waveform.noise=1.0", f"training.distill.teacher={trained_runs / 'fc'}",
        f"features.cache_dir={tmp_path / 'c'}"])
    data = prepare_data(cfg, progress=False)
    train = [r for r in data.rows if r["split"] == "train"] + data.augmented
    assert len(data.augmented) == len(train) // 2 and {r["variant"] for r in data.augmented} == {"aug0"}
    test = {r["speaker"] for r in data.rows if r["split"] == "test"}
    normalizer = fit_normalizer(cfg, data).to_dict()
    with pytest.raises(Exception, match="trained on test speaker"):  # the fc fixture saw every speaker
        load_teacher(cfg, data, train, test, normalizer)
    teacher = load_teacher(dataclasses.replace(cfg), data, train, set(), normalizer)
    assert isinstance(teacher, RecordingTeacher) and teacher.logits.shape == (len(train), len(data.labels))
    half = len(train) // 2
    assert not np.allclose(teacher.logits[:half].numpy(), teacher.logits[half:].numpy(), atol=1e-3)
    # copy_targets: clean: a copy takes the teacher's outputs on the clean recording it came from
    clean = dataclasses.replace(cfg, training=dataclasses.replace(
        cfg.training, distill=dataclasses.replace(cfg.training.distill, copy_targets="clean")))
    clean_teacher = load_teacher(clean, data, train, set(), normalizer)
    assert isinstance(clean_teacher, RecordingTeacher)
    np.testing.assert_allclose(clean_teacher.logits[half:].numpy(), teacher.logits[:half].numpy(), atol=1e-5)
    np.testing.assert_allclose(clean_teacher.logits[:half].numpy(), teacher.logits[:half].numpy(), atol=1e-5)


def test_clean_copy_targets_with_a_teacher_on_the_students_own_features(tmp_path, trained_runs, synth_corpus):
    """A teacher on the student's features and normalisation runs on the student's batches; with
    copy_targets: clean and speed copies it answers once per clean recording, each copy taking its original's
    outputs, and mixup is refused naming copy_targets."""
    import dataclasses

    import numpy as np

    from emodet.config import load_config
    from emodet.core.errors import UsageError
    from emodet.data.prepare import fit_normalizer, prepare_data
    from emodet.training.teacher import BatchTeacher, RecordingTeacher, load_teacher

    cfg = load_config(REPO / "configs" / "cnn_logmel.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.test=1", "training.augment.speed=[0.9]",
        f"training.distill.teacher={trained_runs / 'cnn'}", f"features.cache_dir={tmp_path / 'c'}"])
    data = prepare_data(cfg, progress=False)
    train = [r for r in data.rows if r["split"] == "train"]
    rows = train + data.augmented
    normalizer = fit_normalizer(cfg, data).to_dict()
    assert isinstance(load_teacher(cfg, data, rows, set(), normalizer), BatchTeacher)

    def with_distill(mixup=0.0, **kw):
        return dataclasses.replace(cfg, training=dataclasses.replace(
            cfg.training, distill=dataclasses.replace(cfg.training.distill, **kw),
            augment=dataclasses.replace(cfg.training.augment, mixup=mixup)))

    clean = load_teacher(with_distill(copy_targets="clean"), data, rows, set(), normalizer)
    assert isinstance(clean, RecordingTeacher) and clean.logits.shape == (len(rows), len(data.labels))
    by_path = {r["path"]: i for i, r in enumerate(train)}
    copies = [by_path[r["path"]] for r in data.augmented]
    assert len(copies) == len(train)
    np.testing.assert_allclose(clean.logits[len(train):].numpy(), clean.logits[copies].numpy(), atol=1e-6)
    assert clean.logits[:len(train)].std(0).min() > 1e-4  # the recordings themselves told apart
    with pytest.raises(UsageError, match="copy_targets: clean"):
        load_teacher(with_distill(copy_targets="clean", mixup=0.2), data, rows, set(), normalizer)


def test_unlabelled_recordings_are_learnt_from_the_teacher_alone(tmp_path, trained_runs, synth_corpus, monkeypatch):
    """--unlabelled DIR: recordings without labels join the student's training set with the teacher's outputs as
    their only target (the hard-label term skips them, the distillation term does not); a labelled recording of the
    run found among them is left out (a test recording would leak); with ``unlabelled_copies`` each gets augmented
    copies that learn the teacher's answer on their original; what cannot work is refused before any data is read,
    and leaves no run directory."""
    import shutil

    import numpy as np
    import torch

    from emodet.data.synth import generate_corpus
    from emodet.training import loop
    from emodet.workflows import experiment

    other = tmp_path / "other"
    generate_corpus(other, per_class=1, speakers=2, seed=7)  # 10 recordings this run never labels
    shutil.copy(sorted(synth_corpus.rglob("*.wav"))[0], other / "a labelled one.wav")
    seen = {}

    def spy(model, train_loader, val_loader, cfg, labels, **kw):
        ds = train_loader.dataset
        seen.update(targets=list(ds.targets), teacher=kw["teacher"], class_targets=kw["targets"], rows=list(ds.rows),
                    features=lambda i: np.asarray(ds.raw_features(i)))
        return real(model, train_loader, val_loader, cfg, labels, **kw)

    real = experiment.train_loop
    monkeypatch.setattr(experiment, "train_loop", spy)
    args = ["--config", REPO / "configs" / "cnn_logmel.yaml", "--data-root", synth_corpus, "--runs-dir",
            tmp_path / "runs", "--set", f"features.cache_dir={tmp_path / 'c'}", "--set", "data.normalize=global",
            "--set", "data.split.val=1", "--set", "data.split.test=0", "--set", "training.epochs=1",
            "--set", "model.preset=tiny", "--no-progress", "--teacher", trained_runs / "fc"]
    out = cli("train", "--run-name", "s", *args, "--unlabelled", other)
    assert out.returncode == 0, out.stderr
    assert "10 unlabelled recordings" in out.stdout and "1 unlabelled recording(s) are labelled" in out.stdout
    targets, teacher = seen["targets"], seen["teacher"]
    assert targets.count(-1) == 10 and -1 not in seen["class_targets"] and len(seen["class_targets"]) == 30
    assert teacher.logits.shape == (40, 5)
    unlabelled = teacher.logits[torch.tensor(targets) == -1]
    assert unlabelled.std(0).min() > 1e-3  # the teacher told the recordings apart
    # one batch of unlabelled recordings alone: no hard-label term, a distillation term with a gradient
    model = torch.nn.Linear(40, 5)
    batch = (torch.randn(3, 40, 50), torch.tensor([-1, -1, -1]), torch.tensor([50, 50, 50]), list(torch.randn(3, 5)))
    cfg = experiment.load_config(tmp_path / "runs" / "s" / "config.yaml").training
    criterion = torch.nn.CrossEntropyLoss()
    loss, kd, n = loop.batch_losses(lambda x, lengths: model(x.mean(2)), batch, criterion, cfg, teacher, torch.device("cpu"), 5, 0)
    assert float(loss.detach()) == 0 and float(kd.detach()) > 0 and n == 3
    kd.backward()
    assert model.weight.grad.abs().sum() > 0
    # augmented copies of them (training.distill.unlabelled_copies): the labelled copies' kinds, each copy learning
    # the teacher's answer on its clean original
    aug = ["--set", "training.augment.waveform.copies=2", "--set", "training.distill.copy_targets=clean"]
    out = cli("train", "--run-name", "s2", *args, *aug, "--unlabelled", other,
              "--set", "training.distill.unlabelled_copies=2")
    assert out.returncode == 0, out.stderr
    assert "(with 60 augmented copies, 10 unlabelled recordings, 20 augmented copies of them)" in out.stdout, out.stdout
    rows, targets, logits = seen["rows"], seen["targets"], seen["teacher"].logits
    assert len(rows) == 120 and targets.count(-1) == 30 and len(seen["class_targets"]) == 90
    originals = {r["path"]: i for i, r in enumerate(rows) if r.get("unlabelled") and not r.get("variant")}
    copies = {k: [(i, originals[r["path"]]) for i, r in enumerate(rows) if r.get("unlabelled") and r.get("variant") == k]
              for k in ("aug0", "aug1")}
    assert [len(v) for v in copies.values()] == [10, 10]
    assert all(torch.equal(logits[i], logits[j]) for i, j in copies["aug0"] + copies["aug1"])  # the clean original's
    for a, b in [*copies["aug0"], *zip([i for i, _ in copies["aug0"]], [i for i, _ in copies["aug1"]])]:
        seen.setdefault("differ", []).append(not np.allclose(seen["features"](a), seen["features"](b)))
    # augmented (no change at all has probability 0.5 x 0.5 x 0.7 x 0.7 a copy), and the two copies drawn apart
    assert sum(seen["differ"][:10]) >= 6 and sum(seen["differ"][10:]) >= 6
    assert json.loads((tmp_path / "runs" / "s2" / "metrics.json").read_text())["unlabelled"] == {
        "recordings": 10, "augmented_copies": 20}
    for extra, why in [(["--set", "training.distill.unlabelled_copies=3"], "0 to 2"),
                       (["--set", "training.distill.unlabelled_copies=-1"], "0 to 2")]:
        bad = cli("train", "--run-name", "bad", *args, *aug, "--unlabelled", other, *extra)
        assert bad.returncode == 2 and why in bad.stderr and not (tmp_path / "runs" / "bad").exists(), bad.stderr
    out = cli("train", "--run-name", "s3", *args, "--set", "training.distill.unlabelled_copies=2")  # no copies either
    assert out.returncode == 0 and "unlabelled_copies: 2 changes nothing: no unlabelled" in out.stdout, out.stdout
    # refused before any data is read, nothing left behind
    for extra, why in [(["--set", "training.distill.weight=0"], "need a teacher"),
                       (["--set", "data.normalize=speaker"], "need data.normalize global or none"),
                       (["--set", "training.augment.mixup=0.2"], "cannot be mixed")]:
        bad = cli("train", "--run-name", "bad", *args, "--unlabelled", other, *extra)
        assert bad.returncode == 2 and why in bad.stderr and not (tmp_path / "runs" / "bad").exists(), bad.stderr
    bad = cli("train", "--run-name", "bad", *args, "--unlabelled", tmp_path / "nowhere")
    assert bad.returncode == 2 and "no such folder or file" in bad.stderr


@pytest.mark.slow  # two trainings with augmented copies (~20 s)
def test_resume_with_waveform_augmentation_equals_an_uncut_run(tmp_path, synth_corpus, monkeypatch):
    """Augmented copies are seeded by run seed, copy and file, so a run cut after an epoch and resumed ends with
    the weights of a run never cut (issue 18)."""
    import dataclasses

    import torch

    from emodet.config import load_config
    from emodet.workflows.experiment import run_experiment

    cfg = load_config(REPO / "configs" / "fc_mfcc.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.val=1", "data.split.test=1",
        "training.epochs=3", "training.early_stopping.patience=0", "training.early_stopping.select=last",
        "training.augment.waveform.copies=1", "training.augment.waveform.reverb=0",
        f"features.cache_dir={tmp_path / 'cache'}"])
    full = run_experiment(cfg, "full", tmp_path, progress=False)
    undo = cut_after_epoch(monkeypatch, 1)
    own = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, cache_dir=str(tmp_path / "cache2")))
    with pytest.raises(Cut):  # its own cache: the augmented copies are made again, and must come out the same
        run_experiment(own, "cut", tmp_path, progress=False)
    undo()
    resumed = run_experiment(own, "cut", tmp_path, resume=True, progress=False)
    assert resumed["uar"] == full["uar"]
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_distillation_settings_without_a_teacher_are_said(caplog):
    """configs/edge_student.yaml sets a distillation weight; trained without --teacher it learns the labels alone,
    and says so rather than silently (the defaults say nothing)."""
    import logging

    from emodet.config import load_config
    from emodet.training.teacher import load_teacher

    cfg = load_config(REPO / "configs" / "edge_student.yaml", ["data.root=somewhere"])
    with caplog.at_level(logging.WARNING, logger="emodet"):
        assert load_teacher(cfg, None, [], set(), {}) is None
    assert "no teacher: this run trains without distillation" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emodet"):
        assert load_teacher(load_config(REPO / "configs" / "cnn_logmel.yaml", ["data.root=x"]), None, [], set(), {}) is None
    assert "distillation" not in caplog.text
