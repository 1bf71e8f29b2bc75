"""The bad-input catalogue, tried against every command: each gets a clear one-line error (exit 2)
or a per-file report (exit 1) with the good files still processed; never a traceback."""

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from emodet.core.errors import AudioError, UsageError

from conftest import REPO, cli

SR = 16000


def tone(seconds, sr=SR, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.stack([x, 0.5 * x], 1) if channels == 2 else x


def write_catalogue(folder):
    """Good files in many formats and bad files, in a folder-per-label corpus with odd names."""
    good, bad = [], {}
    (folder / "happy").mkdir(parents=True)
    (folder / "sad").mkdir()
    specs = {
        "happy/spk1_u8.wav": (tone(1.0), SR, "PCM_U8"), "happy/spk1_s24.wav": (tone(1.0), SR, "PCM_24"),
        "happy/spk1_float.wav": (tone(1.0), SR, "FLOAT"), "happy/spk2_stereo.wav": (tone(1.0, channels=2), SR, "PCM_16"),
        "happy/spk2_8k.wav": (tone(1.0, 8000), 8000, "PCM_16"), "happy/spk2_48k.wav": (tone(1.0, 48000), 48000, "PCM_16"),
        "happy/spk1_silence.wav": (np.zeros(SR, np.float32), SR, "PCM_16"),
        "happy/spk2_10ms.wav": (tone(0.01), SR, "PCM_16"),
        "sad/spk1 with space é ünï.wav": (tone(1.2), SR, "PCM_16"),
        "sad/spk2_long10min.flac": (np.tile(tone(1.0), 600), SR, "PCM_16"),
    }
    for rel, (data, sr, subtype) in specs.items():
        sf.write(folder / rel, data, sr, subtype=subtype)
        good.append(rel)
    sf.write(folder / "happy" / "spk1_full.wav", tone(1.0), SR)
    good.append("happy/spk1_full.wav")
    whole = (folder / "happy" / "spk1_full.wav").read_bytes()
    (folder / "happy" / "spk1_truncated.wav").write_bytes(whole[:40])
    bad["happy/spk1_truncated.wav"] = "cannot decode"
    (folder / "happy" / "spk2_empty.wav").write_bytes(b"")
    bad["happy/spk2_empty.wav"] = "zero-byte file"
    (folder / "happy" / "spk2_random.wav").write_bytes(np.random.default_rng(0).bytes(4096))
    bad["happy/spk2_random.wav"] = "cannot decode"
    nan = tone(1.0)
    nan[100] = np.nan
    nan[200] = np.inf
    sf.write(folder / "happy" / "spk1_nan.wav", nan, SR, subtype="FLOAT")
    bad["happy/spk1_nan.wav"] = "NaN or infinite"
    return good, bad


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad corpus ß")
    good, bad = write_catalogue(folder)
    return folder, good, bad


def test_loader_on_every_entry(catalogue):
    from emodet.core.audio import load_audio

    folder, good, bad = catalogue
    for rel in good:
        wav = load_audio(folder / rel)
        assert wav.dtype == np.float32 and wav.ndim == 1 and np.isfinite(wav).all()
    assert len(load_audio(folder / "happy/spk2_48k.wav")) == SR
    assert len(load_audio(folder / "happy/spk2_10ms.wav")) == 160
    for rel, message in bad.items():
        with pytest.raises(AudioError, match=message):
            load_audio(folder / rel)


def test_features_skips_and_reports_bad_files(catalogue, tmp_path):
    folder, good, bad = catalogue
    out = cli("features", "--data-root", folder, "--cache-dir", tmp_path / "c", "--feature", "logmel")
    assert out.returncode == 1
    assert f"{len(good) + len(bad)} files, {len(good)} computed, 0 already cached, {len(bad)} failed" in out.stdout
    assert "Traceback" not in out.stderr
    report = json.loads(next((tmp_path / "c").glob("logmel-*/report.json")).read_text())
    failed = {f["path"]: f["error"] for f in report["failed"]}
    assert set(failed) == set(bad)
    for rel, message in bad.items():
        assert message in failed[rel]
    assert len(list((tmp_path / "c").rglob("*.npy"))) == len(good)
    assert not list((tmp_path / "c").rglob("*.tmp"))
    stop = cli("features", "--data-root", folder, "--cache-dir", tmp_path / "c2", "--on-error", "raise")
    assert stop.returncode == 1 and stop.stderr.count("\n") == 1 and "emodet: error:" in stop.stderr


def test_data_prepare_lists_unreadable_files(catalogue, tmp_path):
    folder, good, bad = catalogue
    out = cli("data", "prepare", "--corpus", "folder", "--root", folder, "--out", tmp_path / "m.csv",
                  "--val", "0", "--test", "1")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    unparsed = {r["path"] for r in csv.DictReader(open(tmp_path / "m.unparsed.csv"))}
    assert {"happy/spk2_empty.wav", "happy/spk2_random.wav"} <= unparsed
    rows = list(csv.DictReader(open(tmp_path / "m.csv", encoding="utf-8")))
    assert {r["path"] for r in rows} >= set(good)  # every readable format, odd names included
    long = next(r for r in rows if r["path"].endswith("long10min.flac"))
    assert float(long["duration_s"]) == pytest.approx(600.0)


def test_train_skips_bad_files_and_reports_them(catalogue, tmp_path):
    folder, good, bad = catalogue
    corpus = tmp_path / "corpus"
    shutil.copytree(folder, corpus)
    shutil.copytree(corpus / "happy", corpus / "angry")
    out = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "r", "--data-root", corpus,
                  "--runs-dir", tmp_path / "runs", "--set", "data.corpus=folder", "--set", "data.split.val=0.0",
                  "--set", "data.split.test=1", "--set", "data.normalize=none", "--set", "training.epochs=1",
                  "--set", f"features.cache_dir={tmp_path / 'c'}", "--no-progress")
    assert "Traceback" not in out.stderr
    assert out.returncode == 2 and "no validation speakers" in out.stderr
    out = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "r", "--data-root", corpus,
                  "--runs-dir", tmp_path / "runs", "--set", "data.corpus=folder", "--set", "data.split.val=1",
                  "--set", "data.split.test=0", "--set", "data.normalize=none", "--set", "training.epochs=1",
                  "--set", f"features.cache_dir={tmp_path / 'c'}", "--no-progress")
    assert out.returncode == 1, out.stderr  # finished, with some inputs failed
    skipped = {r["path"] for r in csv.DictReader(open(tmp_path / "runs" / "r" / "skipped.csv"))}
    assert "happy/spk1_nan.wav" in skipped and "angry/spk1_nan.wav" in skipped
    assert (tmp_path / "runs" / "r" / "metrics.json").is_file()


def test_manifest_problems(catalogue, tmp_path):
    folder, good, bad = catalogue
    rows = [{"path": "happy/spk1_full.wav", "label": "happy", "speaker": "a", "split": "test"},
            {"path": "happy/nope.wav", "label": "happy", "speaker": "a", "split": "test"}]
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "speaker", "split"])
        w.writeheader()
        w.writerows(rows)
    from emodet.data.cache import FeatureCache
    from emodet.data.dataset import FeatureDataset
    from emodet.data.manifest import read_manifest

    ds = FeatureDataset(read_manifest(tmp_path / "m.csv"), folder, FeatureCache(tmp_path / "c", "logmel"), ["happy"])
    with pytest.raises(UsageError, match=r"row 2: file not found: .*nope.wav"):
        ds[1]
    with pytest.raises(UsageError, match="has label 'happy', not one of data.labels: sad"):
        FeatureDataset(read_manifest(tmp_path / "m.csv"), folder, FeatureCache(tmp_path / "c", "logmel"), ["sad", "angry"])
    (tmp_path / "garbage.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="garbage.csv"):
        read_manifest(tmp_path / "garbage.csv")


def test_run_directory_that_is_not_one(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (["evaluate", tmp_path / "empty"], ["export", tmp_path / "empty", "--out", tmp_path / "m.onnx"],
                 ["ensemble", tmp_path / "empty", tmp_path / "empty", "--out", tmp_path / "e"]):
        out = cli(*args)
        assert out.returncode == 2, args
        assert "is not a finished run directory" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_config_value_of_the_wrong_type(tmp_path, catalogue):
    folder, _, _ = catalogue
    (tmp_path / "c.yaml").write_text("training:\n  batch_size: '32'\n")
    out = cli("train", "--config", tmp_path / "c.yaml", "--run-name", "x", "--data-root", folder,
                  "--runs-dir", tmp_path / "runs")
    assert out.returncode == 2 and "training.batch_size must be integer, got '32'" in out.stderr
    out = cli("cv", "--config", tmp_path / "c.yaml", "--folds", "loso", "--run-name", "x", "--data-root", folder,
                  "--runs-dir", tmp_path / "runs")
    assert out.returncode == 2 and "training.batch_size must be integer" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_predict_on_the_catalogue(catalogue, tmp_path, synth_corpus):
    """Bad files are reported one line each; good ones (every format, silence, 10 ms, 10 min) predicted, silence and
    10 ms with a warning that the answer is a guess."""
    from emodet.config import load_config
    from emodet.workflows.experiment import run_experiment
    from emodet.export.onnx import export_run

    folder, good, bad = catalogue
    cfg = load_config(REPO / "configs" / "fc_mfcc.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.val=1", "data.split.test=1",
        "data.normalize=global", "training.epochs=1", f"features.cache_dir={tmp_path / 'c'}"])
    run_experiment(cfg, "m", tmp_path / "runs", progress=False)
    export_run(tmp_path / "runs" / "m", tmp_path / "m.onnx")
    files = [folder / rel for rel in good + list(bad)]
    out = cli("predict", tmp_path / "m.onnx", *files, "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    results = {r["file"]: r for r in json.loads(out.stdout)}
    for rel in good:
        assert abs(sum(results[str(folder / rel)]["probabilities"].values()) - 1) < 1e-4
    for rel, message in bad.items():
        assert message in results[str(folder / rel)]["error"]
    lines = out.stderr.strip().splitlines()
    guesses = [line for line in lines if "too little sound to judge" in line]
    assert len(lines) - len(guesses) == len(bad)
    assert sorted(g.split(": ")[2] for g in guesses) == sorted(str(folder / rel) for rel in
                                                            ("happy/spk1_silence.wav", "happy/spk2_10ms.wav"))


def test_evaluate_with_bad_manifests(tmp_path, synth_corpus):
    from emodet.config import load_config
    from emodet.workflows.experiment import run_experiment

    cfg = load_config(REPO / "configs" / "fc_mfcc.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.val=1", "data.split.test=1",
        "training.epochs=1", f"features.cache_dir={tmp_path / 'c'}"])
    run_experiment(cfg, "m", tmp_path / "runs", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "m" / "manifest.csv")))
    test = [r for r in rows if r["split"] == "test"]
    fields = list(rows[0])
    cases = {"missing.csv": [dict(test[0], path="sad/not_there.wav")] + test[1:],
             "label.csv": [dict(test[0], label="bored")] + test[1:]}
    for name, content in cases.items():
        with open(tmp_path / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(content)
    out = cli("evaluate", tmp_path / "runs" / "m", "--manifest", tmp_path / "missing.csv", "--data-root", synth_corpus)
    assert out.returncode == 2 and "row 1: file not found" in out.stderr and "not_there.wav" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli("evaluate", tmp_path / "runs" / "m", "--manifest", tmp_path / "label.csv", "--data-root", synth_corpus)
    assert out.returncode == 2 and "label 'bored' is not one the model knows" in out.stderr
    out = cli("evaluate", tmp_path / "runs" / "m", "--manifest", tmp_path / "nothing.csv")
    assert out.returncode == 2 and "nothing.csv" in out.stderr
