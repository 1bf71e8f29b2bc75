"""A new user's first trial, command by command, on a small corpus of their own (the defects a first trial hit,
issue 17: each test fails on the code before the fix)."""

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import soxr

from emodet.data.synth import generate_corpus

from conftest import REPO, cli

FFMPEG = shutil.which("ffmpeg")
TRAIN = ["--set", "training.epochs=2", "--no-progress"]


@pytest.fixture(scope="module")
def my_corpus(tmp_path_factory):
    """A folder-per-label corpus as a user has one: 4 speakers, their own label 'frustrated' beside canonical
    ones in capitals, names with spaces, several formats (FLAC, 48 kHz stereo WAV, MP3, OGG; M4A with ffmpeg)."""
    src = tmp_path_factory.mktemp("synth")
    generate_corpus(src, per_class=2, speakers=4, seed=3)
    root = tmp_path_factory.mktemp("my corpus")
    names = {"angry": "Angry", "happy": "happy", "sad": "sad", "neutral": "neutral", "fearful": "frustrated"}
    formats = ["wav", "flac", "mp3", "ogg", "m4a" if FFMPEG else "wav"]
    for i, wav in enumerate(sorted(src.rglob("*.wav"))):
        y, sr = sf.read(wav, dtype="float32")
        folder = root / names[wav.parent.name]
        folder.mkdir(exist_ok=True)
        ext = formats[i % len(formats)]
        target = folder / f"{wav.stem} copy.{ext}"  # spaces in names
        if ext == "m4a":
            tmp = target.with_suffix(".tmp.wav")
            sf.write(tmp, y, sr)
            subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(tmp), str(target)], check=True)
            tmp.unlink()
        elif ext == "wav" and i % 2:  # 48 kHz stereo
            y48 = soxr.resample(y, sr, 48000).astype(np.float32)
            sf.write(target, np.stack([y48, 0.5 * y48], 1), 48000)
        else:
            sf.write(target, y, sr, format={"mp3": "MP3", "ogg": "OGG"}.get(ext, ext.upper()))
    (root / "notes.txt").write_text("my recordings\n")
    return root


@pytest.fixture(scope="module")
def prepared(my_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("work")
    done = cli("data", "prepare", "--corpus", "folder", "--root", my_corpus, "--out", out / "m.csv", "--val", "1",
               "--test", "1")
    assert done.returncode == 0, done.stderr
    return out, done


def test_prepare_reads_every_format_and_keeps_own_labels(prepared, my_corpus):
    out, done = prepared
    rows = list(csv.DictReader(open(out / "m.csv")))
    audio = [p for p in my_corpus.rglob("*") if p.suffix in (".wav", ".flac", ".mp3", ".ogg", ".m4a")]
    assert len(rows) == len(audio) == 40  # every file, M4A included when ffmpeg is here
    assert {r["label"] for r in rows} == {"angry", "happy", "sad", "neutral", "frustrated"}
    assert "labels kept as they are (not in the canonical set): frustrated" in done.stdout
    assert "not audio: 1 .txt" in done.stdout
    if FFMPEG:
        assert any(r["path"].endswith(".m4a") for r in rows)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
def test_m4a_is_read_through_ffmpeg(my_corpus):
    from emodet.core.audio import load_audio_with_rate

    m4a = next(my_corpus.rglob("*.m4a"))
    wav, rate = load_audio_with_rate(m4a, None)
    assert rate == 16000 and abs(len(wav) / rate - 1.9) < 1.5 and np.abs(wav).max() > 0.01


def test_unreadable_formats_are_listed_not_lost(tmp_path, monkeypatch):
    """Without ffmpeg an M4A is listed as unreadable, with the reason and what to install."""
    from emodet.core import audio

    (tmp_path / "happy").mkdir()
    sf.write(tmp_path / "happy" / "a_1.wav", np.zeros(8000, np.float32) + 0.1, 16000)
    (tmp_path / "happy" / "a_2.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 200)
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    done = cli("data", "prepare", "--corpus", "folder", "--root", tmp_path, "--out", tmp_path / "m.csv", "--val", "0",
               "--test", "0")
    assert done.returncode == 1 and "a_2.m4a" in done.stderr and "needs ffmpeg" in done.stderr
    unparsed = list(csv.DictReader(open(tmp_path / "m.unparsed.csv")))
    assert [u["path"] for u in unparsed] == ["happy/a_2.m4a"] and "apt-get install ffmpeg" in unparsed[0]["reason"]
    empty = tmp_path / "empty"
    empty.mkdir()
    no_audio = cli("features", "--data-root", empty, "--cache-dir", tmp_path / "c")
    assert no_audio.returncode == 2 and "no audio files found" in no_audio.stderr
    for ext in ("wav", "flac", "mp3", "m4a", "webm", "wma"):  # the whole list, never "..."
        assert ext in no_audio.stderr


def test_final_model_on_every_speaker_trains_exports_and_predicts_a_folder(prepared, my_corpus, tmp_path):
    out, _ = prepared
    lost = cli("train", "--config", REPO / "configs" / "cnn_logmel.yaml", "--run-name", "final", "--runs-dir",
               tmp_path / "runs", "--set", f"data.manifest={out / 'm.csv'}")
    assert lost.returncode == 2 and "40 of 40 files not found" in lost.stderr and "pass --data-root" in lost.stderr
    train = cli("train", "--config", REPO / "configs" / "cnn_logmel.yaml", "--run-name", "final", "--runs-dir",
                tmp_path / "runs", "--data-root", my_corpus, "--set", f"data.manifest={out / 'm.csv'}",
                "--set", "data.split.method=speaker",
                "--set", "data.split.test=0", "--set", "data.normalize=global",
                "--set", f"features.cache_dir={tmp_path / 'cache'}", *TRAIN)
    assert train.returncode == 0, train.stderr
    assert "trained on every speaker (no test split, so no test figures" in train.stdout
    assert "epoch   2" in train.stdout  # --no-progress hides bars, not the epoch lines a CI log needs
    metrics = json.loads((tmp_path / "runs" / "final" / "metrics.json").read_text())
    assert "test" not in metrics and "no_test_note" in metrics and metrics["labels"][-1] == "frustrated"
    assert (tmp_path / "runs" / "final" / "curves.png").is_file()
    export = cli("export", tmp_path / "runs" / "final", "--out", tmp_path / "final.onnx", "--with-features",
                 "--quantize", "int8")
    assert export.returncode == 0, export.stderr
    assert "WARNING" not in export.stdout + export.stderr  # the quantiser's notes stay off the screen
    predicted = cli("predict", tmp_path / "final.onnx", my_corpus / "frustrated", "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert len(json.loads(predicted.stdout)) == 8  # every file of the folder, one answer each, no calibration asked


def test_a_manifest_keeps_its_own_split_and_a_resplit_is_announced(prepared, my_corpus, tmp_path):
    out, _ = prepared
    rows = list(csv.DictReader(open(out / "m.csv")))
    base = ["--config", REPO / "configs" / "fc_mfcc.yaml", "--runs-dir", tmp_path / "runs", "--data-root", my_corpus, "--set",
            f"data.manifest={out / 'm.csv'}", "--set", f"features.cache_dir={tmp_path / 'cache'}", *TRAIN]
    kept = cli("train", "--run-name", "kept", *base)
    assert kept.returncode == 0, kept.stderr
    assert "using the split of" in kept.stdout
    used = {r["path"]: r["split"] for r in csv.DictReader(open(tmp_path / "runs" / "kept" / "manifest.csv"))}
    assert used == {r["path"]: r["split"] for r in rows}
    again = cli("train", "--run-name", "resplit", *base, "--set", "data.split.method=speaker", "--set",
                "data.split.seed=5")
    assert again.returncode == 0 and "own split column replaced by a new split by speaker" in again.stdout


def test_feature_cache_tells_two_corpora_apart(tmp_path):
    from emodet.data.cache import FeatureCache

    for name, freq in (("dA", 220.0), ("dB", 660.0)):
        (tmp_path / name / "happy").mkdir(parents=True)
        t = np.arange(16000) / 16000
        sf.write(tmp_path / name / "happy" / "s1_001.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    a, b = (tmp_path / n / "happy" / "s1_001.wav" for n in ("dA", "dB"))
    stat = a.stat()
    import os

    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same name, size and time: only the audio differs
    assert b.stat().st_size == stat.st_size and b.stat().st_mtime_ns == stat.st_mtime_ns
    cache = FeatureCache(tmp_path / "cache", "logmel")
    first = cache.build(tmp_path / "dA")
    second = cache.build(tmp_path / "dB")
    assert (first.computed, second.computed, second.cached) == (1, 1, 0)
    assert not np.allclose(cache.load(tmp_path / "dA", "happy/s1_001.wav"), cache.load(tmp_path / "dB", "happy/s1_001.wav"))


def test_warnings_about_a_class_of_one_speaker_and_a_tiny_validation_split(tmp_path):
    from emodet.data.checks import warn_about_data

    rows = [{"label": lab, "speaker": spk, "split": split} for lab, spk, split in [
        ("happy", "a", "train"), ("happy", "b", "train"), ("sad", "a", "train"), ("sad", "b", "train"),
        ("fearful", "a", "train"), ("happy", "c", "val"), ("sad", "c", "val")]]
    with pytest.warns(UserWarning) as caught:
        messages = warn_about_data(rows, ["happy", "sad", "fearful"], selects_on_val=True)
    assert len(caught) == 2
    assert "class 'fearful' is shown by 1 speaker(s) (a)" in messages[0] and "--labels" in messages[0]
    assert "validation split is too small" in messages[1] and "1 speaker(s)" in messages[1] and "no fearful" in messages[1]
    assert warn_about_data(rows[:4] + [dict(r, speaker="d") for r in rows[:4]], ["happy", "sad"], False) == []


def test_resume_reuses_the_runs_config_and_names_what_differs(prepared, my_corpus, tmp_path):
    out, _ = prepared
    base = ["--runs-dir", tmp_path / "runs"]
    args = ["--config", REPO / "configs" / "fc_mfcc.yaml", "--data-root", my_corpus, "--set", f"data.manifest={out / 'm.csv'}",
            "--set", f"features.cache_dir={tmp_path / 'cache'}", "--set", "training.epochs=3", "--no-progress"]
    assert cli("train", "--run-name", "r", *base, *args).returncode == 0
    resumed = cli("train", "--run-name", "r", *base, "--resume")  # nothing repeated: its own config.yaml
    assert resumed.returncode == 0, resumed.stderr
    changed = cli("train", "--run-name", "r", *base, *args, "--set", "training.lr=0.5", "--set", "training.seed=3",
                  "--resume")
    assert changed.returncode == 2 and "(training.lr, training.seed differ)" in changed.stderr
    missing = cli("train", "--run-name", "nothing", *base, "--resume")
    assert missing.returncode == 2 and "needs --config" in missing.stderr


def test_ctrl_c_says_how_to_resume(monkeypatch, tmp_path):
    import emodet.workflows.experiment as experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_experiment", interrupted)
    done = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "x", "--data-root", tmp_path)
    assert done.returncode == 130 and "continue it with: emodet train --run-name x --resume" in done.stderr


def test_evaluate_on_another_manifest_keeps_the_runs_own_figures(trained_runs, synth_corpus, tmp_path):
    run = trained_runs / "cnn"
    own = cli("evaluate", run)
    assert own.returncode == 0, own.stderr
    before = (run / "eval_test.json").read_text()
    rows = [r for r in csv.DictReader(open(run / "manifest.csv"))]
    other = tmp_path / "other corpus.csv"
    with open(other, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:10])
    done = cli("evaluate", run, "--manifest", other, "--split", "all", "--data-root", synth_corpus)
    assert done.returncode == 0, done.stderr
    assert (run / "eval_other corpus_all.json").is_file() and (run / "eval_test.json").read_text() == before
    chosen = cli("evaluate", run, "--manifest", other, "--split", "all", "--data-root", synth_corpus, "--out",
                 tmp_path / "mine.json")
    assert chosen.returncode == 0 and (tmp_path / "mine.json").is_file() and (tmp_path / "mine_predictions.csv").is_file()
    rootless = cli("evaluate", run, "--manifest", other, "--split", "all")  # relative paths, no data root given
    assert rootless.returncode == 2 and "row 1: file not found" in rootless.stderr
    assert "pass --data-root DIR" in rootless.stderr


def test_a_failed_start_leaves_nothing_and_suggestions_work(tmp_path):
    one = tmp_path / "one"
    (one / "happy").mkdir(parents=True)
    (one / "sad").mkdir()
    for i in range(3):
        sf.write(one / "happy" / f"solo_{i}.wav", np.zeros(8000, np.float32) + 0.1, 16000)
        sf.write(one / "sad" / f"solo_{i}.wav", np.zeros(8000, np.float32) - 0.1, 16000)
    args = ["cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "cv1", "--data-root", one,
            "--runs-dir", tmp_path / "runs", "--set", "data.corpus=folder", "--set", f"features.cache_dir={tmp_path / 'c'}"]
    for folds in ("3", "loso"):
        refused = cli(*args, "--folds", folds)
        assert refused.returncode == 2 and "the data has 1 (solo)" in refused.stderr and "--folds loso" not in refused.stderr
        assert not (tmp_path / "runs" / "cv1").exists()  # nothing left to block the retry
    bad_data = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "t1", "--data-root", one,
                   "--runs-dir", tmp_path / "runs", "--set", "data.corpus=folder")
    assert bad_data.returncode == 2 and "needs at least" in bad_data.stderr
    assert not (tmp_path / "runs" / "t1").exists()
    solo = cli("train", "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "t1", "--data-root", one,
               "--runs-dir", tmp_path / "runs", "--set", "data.corpus=folder", "--set", "data.split.val=0", "--set",
               "data.split.test=0", "--set", "training.early_stopping.select=last", "--set",
               "training.early_stopping.patience=0", "--set", "training.epochs=1", "--set",
               f"features.cache_dir={tmp_path / 'c'}")
    assert solo.returncode == 0, solo.stderr  # a one-speaker corpus trains a final model (and is warned about)
    assert "shown by 1 speaker(s)" in solo.stderr


def test_cv_draws_its_plots(tmp_path, synth_corpus):
    done = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv",
               "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set", "training.epochs=1",
               "--set", f"features.cache_dir={tmp_path / 'c'}", "--no-progress")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "runs" / "cv" / "cv_summary.json").read_text())
    assert set(summary["per_speaker"]) == {"spk01", "spk02", "spk03"}
    for png in ("confusion_matrix.png", "per_speaker_uar.png"):
        assert (tmp_path / "runs" / "cv" / png).read_bytes()[:4] == b"\x89PNG"


def test_learning_curves_have_whole_epochs_and_no_empty_panel(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emodet.evaluation import plots

    shown = {}
    real_save = plots._save

    def keep(fig, path):
        shown["axes"] = fig.axes
        shown["ticks"] = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 4]
        real_save(fig, path)

    plots._save = keep
    try:
        nan = float("nan")
        history = [{"epoch": e, "train_loss": 1 / e, "val_loss": nan, "val_uar": nan, "val_wa": nan} for e in (1, 2, 3, 4)]
        plots.plot_curves(history, tmp_path / "c.png")
    finally:
        plots._save = real_save
    assert len(shown["axes"]) == 1  # no validation split: the loss panel alone
    assert all(float(t).is_integer() for t in shown["ticks"]) and shown["ticks"]
    plt.close("all")


def test_truncated_and_random_mp3_are_reported_in_words(tmp_path):
    from emodet.core.audio import AudioTruncatedWarning, load_audio
    from emodet.core.errors import AudioError

    t = np.arange(32000) / 16000
    sf.write(tmp_path / "whole.mp3", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, format="MP3")
    data = (tmp_path / "whole.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) // 2])
    with pytest.warns(AudioTruncatedWarning, match=r"cut.mp3: the file seems truncated"):
        load_audio(tmp_path / "cut.mp3")
    (tmp_path / "random.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioError, match=r"random.mp3: cannot decode audio \(not a valid MP3 file") as err:
        load_audio(tmp_path / "random.mp3")
    assert "does not exist" not in str(err.value)


def test_calibrated_confidence_from_a_cross_validation_reaches_the_runtime(trained_runs, tmp_path, synth_corpus):
    import onnxruntime as ort

    from emodet.core.fusion import softmax
    from emodet.runtime import EmotionPredictor

    cv = cli("cv", "--config", REPO / "configs" / "fc_mfcc.yaml", "--folds", "loso", "--run-name", "cv", "--data-root",
             synth_corpus, "--runs-dir", tmp_path / "runs", "--set", "training.epochs=3", "--set",
             "data.normalize=global", "--set", f"features.cache_dir={tmp_path / 'c'}", "--no-progress")
    assert cv.returncode == 0, cv.stderr
    run = tmp_path / "fc"
    shutil.copytree(trained_runs / "fc", run)
    assert json.loads((run / "metrics.json").read_text())["calibration"]["fitted_on"] == "val"  # train fits one
    done = cli("calibrate", run, "--from", tmp_path / "runs" / "cv")
    assert done.returncode == 0 and "temperature" in done.stdout, done.stderr
    t = json.loads((run / "metrics.json").read_text())["calibration"]["temperature"]
    assert t != 1.0
    assert cli("export", run, "--out", tmp_path / "fc.onnx").returncode == 0
    pred = EmotionPredictor(tmp_path / "fc.onnx")
    assert pred.temperature == pytest.approx(t)
    clip = synth_corpus / "sad" / "spk01_sad_000.wav"
    y, _ = sf.read(clip, dtype="float32")
    raw = pred.logits([y])[0]
    assert list(pred.predict(clip).values()) == pytest.approx(list(softmax(raw / t)), abs=1e-6)
    meta = ort.InferenceSession(str(tmp_path / "fc.onnx")).get_modelmeta().custom_metadata_map
    assert float(meta["emodet.temperature"]) == pytest.approx(t)
    sure = cli("predict", tmp_path / "fc.onnx", clip, "--min-confidence", "0.99", "--json")
    assert json.loads(sure.stdout)[0]["label"] == "uncertain"
    evaluated = cli("evaluate", run, "--manifest", run / "manifest.csv", "--split", "all", "--data-root", synth_corpus)
    assert evaluated.returncode == 0 and "calibration: ECE" in evaluated.stdout
    assert (run / "eval_manifest_all_reliability.png").is_file()
