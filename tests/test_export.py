import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("onnxruntime")

from emodet.config import load_config
from emodet.core.errors import UsageError
from emodet.export.onnx import export_run
from emodet.runtime import EmotionPredictor, smooth_segments
from emodet.runtime.predictor import CalibrationWarning
from emodet.workflows.experiment import run_experiment

from conftest import REPO, cli, speechlike

LABELS = ["neutral", "happy", "sad", "angry", "fearful"]


def test_export_parity_and_metadata(trained_runs, exported, synth_corpus):
    import onnxruntime as ort
    import torch

    from emodet.features import compute_feature
    from emodet.runs import load_predictor

    out, reports = exported
    for name, with_features in (("fc", False), ("cnn", True)):
        assert reports[name]["max_abs_diff"] < 1e-3
        meta = ort.InferenceSession(str(out / f"{name}.onnx")).get_modelmeta().custom_metadata_map
        assert json.loads(meta["emodet.labels"]) == LABELS
        assert meta["emodet.sample_rate"] == "16000" and meta["emodet.with_features"] == str(int(with_features))
        params = json.loads(meta["emodet.feature_params"])
        assert params["hop_length"] == 160 and params["n_mels"] == 64
        normalizer = json.loads(meta["emodet.normalizer"])
        assert normalizer["mode"] == ("global" if name == "fc" else "speaker")
        assert meta["emodet.needs"] == ("nothing" if name == "fc" else "calibrate")  # what deployment must give
    assert len(json.loads(ort.InferenceSession(str(out / "fc.onnx")).get_modelmeta()
                          .custom_metadata_map["emodet.normalizer"])["mean"]) == 40
    # the runtime equals the PyTorch path at several lengths (fc: features computed in numpy by the runtime)
    model = load_predictor(trained_runs / "fc")
    metrics = json.loads((trained_runs / "fc" / "metrics.json").read_text())
    stats, temperature = metrics["normalizer"], metrics["calibration"]["temperature"]
    pred = EmotionPredictor(out / "fc.onnx")
    assert pred.temperature == pytest.approx(temperature) and temperature != 1.0  # fitted on the validation split
    wav = sf.read(synth_corpus / "sad" / "spk01_sad_000.wav", dtype="float32")[0]
    for n in (4000, 16000, len(wav)):
        feats = compute_feature("mfcc", wav[:n], 16000, {"n_mfcc": 40, "n_mels": 64})
        x = (feats - np.array(stats["mean"])[:, None]) / np.array(stats["std"])[:, None]
        with torch.no_grad():
            ref = torch.softmax(model(torch.from_numpy(x[None].astype(np.float32))) / temperature, 1)[0].numpy()
        np.testing.assert_allclose(list(pred.predict(wav[:n], sr=16000).values()), ref, atol=1e-4)
        np.testing.assert_allclose(list(pred.predict((wav[:n], 16000)).values()), ref, atol=1e-4)


def test_with_features_graph_takes_any_length_and_batches(exported, synth_corpus):
    out, _ = exported
    pred = EmotionPredictor(out / "cnn.onnx")
    files = sorted((synth_corpus / "angry").glob("*.wav"))[:3]
    pred.calibrate(files)
    single = [pred.predict(f) for f in files]
    batch = pred.predict_batch(files)
    for a, b in zip(single, batch):  # alone or padded in a batch: equal up to float rounding of the graph's DFT
        assert a == pytest.approx(b, abs=5e-4)
    short = pred.predict(np.zeros(3000, np.float32) + 0.01, sr=16000)
    assert sum(short.values()) == pytest.approx(1.0, abs=1e-5)
    resampled = pred.predict(sf.read(files[0], dtype="float32")[0][::2], sr=8000)
    assert set(resampled) == set(single[0])


def test_int8_is_smaller_and_agrees_with_fp32(trained_runs, exported, synth_corpus):
    import onnx

    from emodet.runs import load_predictor

    out, reports = exported
    report = reports["cnn"]
    model_bytes = sum(p.numel() * 4 for p in load_predictor(trained_runs / "cnn").parameters())
    # the model's weights go to 8 bits (saving at least 60% of their float size); the front end stays float
    assert report["bytes"] - report["int8_bytes"] > 0.6 * model_bytes
    inits = {i.name: i.data_type for i in onnx.load(str(out / "cnn.int8.onnx")).graph.initializer}
    for name in ("frontend.spectrogram.stage1", "frontend.spectrogram.stage2"):
        assert inits[name] == onnx.TensorProto.FLOAT
    for path in (out / "cnn.onnx", out / "cnn.int8.onnx"):  # the mel bank (97% zeros): exact, stored sparse
        sparse = {t.values.name: t.values.data_type for t in onnx.load(str(path)).graph.sparse_initializer}
        assert sparse == {"frontend.mel.filters": onnx.TensorProto.FLOAT}
    # and the exporter's per-node debug records are not shipped
    assert not any(len(n.metadata_props) for n in onnx.load(str(out / "cnn.onnx")).graph.node)
    assert any(t == onnx.TensorProto.INT8 for t in inits.values())
    fp32, int8 = EmotionPredictor(out / "cnn.onnx"), EmotionPredictor(out / "cnn.int8.onnx")
    files = sorted(synth_corpus.rglob("*.wav"))[::3]
    fp32.calibrate(files[:5])
    int8.calibrate(files[:5])
    agree = np.mean([max(a, key=a.get) == max(b, key=b.get) for a, b in
                     zip(fp32.predict_batch(files), int8.predict_batch(files))])
    assert agree >= 0.8


def test_a_per_speaker_model_refuses_to_answer_without_calibration(exported, synth_corpus, tmp_path):
    """Normalised with its own statistics, every recording of a per-speaker model looks alike: never answer so."""
    out, _ = exported
    pred = EmotionPredictor(out / "cnn.onnx")
    assert pred.needs == "calibrate" and pred.needs_calibration
    clip = synth_corpus / "angry" / "spk01_angry_000.wav"
    with pytest.raises(UsageError, match=r"needs --calibrate DIR, --calibrate 'GLOB' .quoted. or --calibrate FILE repeated.*data.normalize: global"):
        pred.predict(clip)
    refused = cli("predict", out / "cnn.onnx", clip)
    assert refused.returncode == 2 and "--calibrate" in refused.stderr
    with pytest.warns(CalibrationWarning, match="on 1 recording.s. of the speaker: statistics of so few"):
        pred.calibrate([clip])  # one recording's statistics are its own emotion's: warned
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        pred.calibrate([clip], few_ok=True)  # a caller that checked the audio's length itself (the server's stream)
        pred.calibrate(sorted((synth_corpus / "sad").glob("spk01_*.wav")) + [clip])
    assert not pred.needs_calibration and sum(pred.predict(clip).values()) == pytest.approx(1, abs=1e-5)
    # one path, as the command line takes it: a file (never read a character at a time) or a folder of audio files
    with pytest.warns(CalibrationWarning, match="on 1 recording.s. of the speaker"):
        pred.calibrate(str(clip))
    pred.calibrate(synth_corpus / "sad")
    by_folder = pred.predict(clip)
    pred.calibrate(sorted((synth_corpus / "sad").rglob("*.wav")))
    assert pred.predict(clip) == pytest.approx(by_folder, abs=1e-5)
    with pytest.raises(UsageError, match="calibrating nothere.wav: no such file or folder"):
        pred.calibrate("nothere.wav")
    with pytest.warns(CalibrationWarning, match="normalises per speaker: the adaptation recordings are used for its calibration"):
        pred.adapt(sorted((synth_corpus / "sad").rglob("*.wav")))  # the other kind of recordings: said
    missing = cli("predict", out / "cnn.onnx", clip, "--calibrate", tmp_path / "nothere")
    assert missing.returncode == 2 and "--calibrate" in missing.stderr and "no such file or folder" in missing.stderr
    assert "recording(s)" not in missing.stderr  # refused before any counting or warning
    empty = cli("predict", out / "cnn.onnx", "", "--calibrate", clip)  # an empty shell variable is not "."
    assert empty.returncode == 2 and "'': an empty path" in empty.stderr
    # a long recording is its own enrollment for sliding windows (warned), and the windows differ
    long = np.concatenate([sf.read(f, dtype="float32")[0] for f in sorted(synth_corpus.rglob("spk02_*.wav"))[:8]])
    sf.write(tmp_path / "long.wav", long, 16000)
    windowed = cli("predict", out / "cnn.onnx", tmp_path / "long.wav", "--window", "2", "--json")
    assert windowed.returncode == 0, windowed.stderr
    assert "taking them from the whole" in windowed.stderr and "give --calibrate recordings of the speaker" in windowed.stderr
    windows = json.loads(windowed.stdout)[0]["windows"]
    assert windows[1]["start"] == 1.0  # the hop defaults to half the window
    assert len({json.dumps(w["probabilities"]) for w in windows}) > 1
    assert EmotionPredictor(out / "fc.onnx").needs == "nothing"


def test_predict_takes_folders_and_standard_input(exported, synth_corpus):
    out, _ = exported
    folder = cli("predict", out / "fc.onnx", synth_corpus / "happy", "--json")
    assert folder.returncode == 0, folder.stderr
    files = [r["file"] for r in json.loads(folder.stdout)]
    assert files == sorted(str(p) for p in (synth_corpus / "happy").glob("*.wav")) and len(files) == 9
    clip = synth_corpus / "happy" / "spk02_happy_001.wav"
    direct = json.loads(cli("predict", out / "fc.onnx", clip, "--json").stdout)[0]
    piped = subprocess.run([sys.executable, "-m", "emodet", "predict", str(out / "fc.onnx"), "-", "--json"],
                           input=clip.read_bytes(), capture_output=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)[0]["probabilities"] == pytest.approx(direct["probabilities"], abs=1e-6)


def test_functionals_feature_cannot_go_into_the_graph(trained_runs, tmp_path):
    metrics = json.loads((trained_runs / "fc" / "metrics.json").read_text())
    fake = tmp_path / "fake_run"
    fake.mkdir()
    for item in ("config.yaml", "manifest.csv"):
        (fake / item).write_text((trained_runs / "fc" / item).read_text())
    (fake / "checkpoints").mkdir()
    (fake / "checkpoints" / "best.pt").write_bytes((trained_runs / "fc" / "checkpoints" / "best.pt").read_bytes())
    metrics["features"]["type"] = "egemaps"
    (fake / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(UsageError, match="feature 'egemaps' cannot go inside an ONNX graph.*export without --with-features"):
        export_run(fake, tmp_path / "x.onnx", with_features=True)


def test_runtime_never_imports_torch(exported, synth_corpus):
    out, _ = exported
    wav = synth_corpus / "happy" / "spk02_happy_001.wav"
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from emodet.runtime import EmotionPredictor\n"
        f"p = EmotionPredictor({str(out / 'fc.onnx')!r})\n"
        f"r = p.predict({str(wav)!r})\n"
        "assert abs(sum(r.values()) - 1) < 1e-5, r\n"
        "assert 'torch' not in sys.modules\n"
        "from emodet.cli import main\n"
        f"sys.exit(main(['predict', {str(out / 'fc.onnx')!r}, {str(wav)!r}, '--json']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["file"] == str(wav)


def test_segments_from_windows_with_known_changes():
    def window(start, label):
        probs = {"sad": 0.1, "angry": 0.1, "happy": 0.1}
        probs[label] = 0.8
        return {"start": start, "end": start + 2.0, "label": label, "probabilities": probs}

    truth = ["sad"] * 6 + ["angry"] * 5 + ["sad"] * 4
    windows = [window(i * 1.0, lab) for i, lab in enumerate(truth)]
    windows[3] = window(3.0, "happy")  # one stray window is smoothed away
    segs = smooth_segments(windows, median=3)
    assert [s["label"] for s in segs] == ["sad", "angry", "sad"]
    assert segs[0]["start"] == 0.0 and segs[-1]["end"] == 16.0
    assert segs[0]["end"] == pytest.approx(6.5) and segs[1]["end"] == pytest.approx(11.5)
    for a, b in zip(segs, segs[1:]):
        assert a["end"] == b["start"]


def test_sliding_windows_on_a_synthetic_recording(exported, tmp_path, synth_corpus):
    """Clips of one emotion, then clips of another: the segments change label where the recording does."""
    out, _ = exported
    pred = EmotionPredictor(out / "fc.onnx")
    by_label = {}
    for f in sorted(synth_corpus.rglob("*.wav")):
        wav = sf.read(f, dtype="float32")[0]
        probs = pred.predict(wav, sr=16000)
        if max(probs, key=probs.get) == f.parent.name and max(probs.values()) > 0.6:  # clips the model knows
            by_label.setdefault(f.parent.name, []).append(wav)
    first, second = sorted(by_label, key=lambda k: -len(by_label[k]))[:2]
    part_a, part_b = np.concatenate(by_label[first][:3]), np.concatenate(by_label[second][:3])
    change = len(part_a) / 16000
    recording = np.concatenate([part_a, part_b])
    total = len(recording) / 16000
    windows = pred.predict_windows(recording, 2.0, 0.5, sr=16000)
    assert windows[0]["start"] == 0.0 and windows[1]["start"] == 0.5
    assert all(w["end"] - w["start"] <= 2.0 + 1e-6 for w in windows) and windows[-1]["end"] == pytest.approx(total, abs=1e-3)
    segs = smooth_segments(windows)
    assert segs[0]["label"] == first and segs[0]["start"] == 0.0 and segs[-1]["end"] == pytest.approx(total, abs=1e-3)
    boundary = next(s["start"] for s in segs if s["label"] == second)
    assert abs(boundary - change) <= 1.5, (boundary, change, segs)
    path = tmp_path / "long.wav"
    sf.write(path, recording, 16000)
    text = cli("predict", out / "fc.onnx", path, "--window", "2", "--hop", "0.5")
    assert text.returncode == 0, text.stderr
    assert first in text.stdout and second in text.stdout and " s  " in text.stdout
    csv_out = cli("predict", out / "fc.onnx", path, "--window", "2", "--hop", "0.5", "--csv")
    assert csv_out.stdout.splitlines()[0] == "file,start,end,label,neutral,happy,sad,angry,fearful"


def test_predict_cli_errors(exported, tmp_path, synth_corpus):
    out, _ = exported
    (tmp_path / "bad.wav").write_bytes(b"junk")
    good = synth_corpus / "sad" / "spk01_sad_000.wav"
    done = cli("predict", out / "fc.onnx", good, tmp_path / "bad.wav")
    assert done.returncode == 1 and "bad.wav: cannot decode" in done.stderr and "spk01_sad_000.wav:" in done.stdout
    for bad in (["--window", "0"], ["--window", "-1", "--hop", "1"], ["--hop", "1"], ["--window", "x"]):
        assert cli("predict", out / "fc.onnx", good, *bad).returncode == 2, bad
    (tmp_path / "not.onnx").write_bytes(b"nope")
    bad_model = cli("predict", tmp_path / "not.onnx", good)
    assert bad_model.returncode == 2 and "not a loadable ONNX model" in bad_model.stderr
    # --calibrate takes one path each time: the files after it are predicted, not swallowed
    three = cli("predict", out / "fc.onnx", "--calibrate", good, good, good, "--json")
    assert three.returncode == 0 and len(json.loads(three.stdout)) == 2
    pred = EmotionPredictor(out / "fc.onnx")
    with pytest.raises(UsageError, match="needs its sample rate"):
        pred.predict(np.zeros(16000, np.float32))
    with pytest.raises(UsageError, match=r"must be \(samples, sample_rate\)"):
        pred.predict((np.zeros(16000, np.float32), 16000.5))


@pytest.fixture(scope="module")
def functionals_run(tmp_path_factory, synth_corpus):
    """configs/linear_compare.yaml (L-BFGS, per-speaker z-score) on eGeMAPS functionals; one test speaker."""
    pytest.importorskip("opensmile")
    base = tmp_path_factory.mktemp("lin")
    run_experiment(load_config(REPO / "configs" / "linear_compare.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.test=1", "features.type=egemaps",
        "features.params.trim_db=30", f"features.cache_dir={base / 'cache'}"]), "lin", base, progress=False)
    return base / "lin"


def test_a_fusion_gives_each_kind_of_recordings_to_the_members_that_need_it():
    """--calibrate goes to per-speaker members, --adapt to per-corpus ones: one never overwrites the other's
    statistics (a mixed fusion's adapt replaced its per-speaker member's); where no member needs a kind, all
    get it (each says it does not use them). One recording given as an array or (samples, rate) is one."""
    from emodet.runtime.fused import FusedPredictor
    from emodet.runtime.predictor import as_recordings

    class Member:
        def __init__(self, needs):
            self.needs, self.got = needs, []

        def calibrate(self, recordings, sr=None, few_ok=False):
            self.got.append(("calibrate", len(recordings)))

        def adapt(self, recordings, sr=None, few_ok=False):
            self.got.append(("adapt", len(recordings)))

    fused = object.__new__(FusedPredictor)
    speaker, corpus, plain = Member("calibrate"), Member("adapt"), Member("nothing")
    fused.members = [speaker, corpus, plain]
    fused.calibrate([np.zeros(800)] * 3)
    fused.adapt([np.zeros(800)] * 4)
    assert speaker.got == [("calibrate", 3)] and corpus.got == [("adapt", 4)] and plain.got == []
    fused.members = [plain]
    fused.adapt([np.zeros(800)] * 4)
    assert plain.got == [("adapt", 4)]
    samples = np.zeros(800, np.float32)
    assert len(as_recordings(samples)) == 1 and len(as_recordings((samples, 16000))) == 1
    assert len(as_recordings([samples, samples])) == 2 and len(as_recordings(x for x in [samples])) == 1


def test_functionals_model_in_the_runtime_equals_training_and_fuses_with_a_cnn(functionals_run, exported, tmp_path,
                                                                               monkeypatch):
    import csv

    import emodet.runtime.predictor as rp
    from emodet.runtime import FusedPredictor

    lin = export_run(functionals_run, tmp_path / "lin.onnx")
    assert lin["max_abs_diff"] < 1e-3
    cnn_path = exported[0] / "cnn.onnx"
    with open(functionals_run / "predictions_test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    root = load_config(functionals_run / "config.yaml").data.root
    files = [str(Path(root) / r["path"]) for r in rows]
    pred = EmotionPredictor(tmp_path / "lin.onnx")
    assert pred.native_rate and pred.feature == "egemaps"
    with pytest.raises(UsageError, match="calibrate"):  # one recording's functionals have no spread
        pred.predict(files[0])
    with pytest.raises(UsageError, match="needs several recordings"):
        pred.calibrate(files[:1])
    long = np.concatenate([sf.read(f, dtype="float32")[0] for f in files] * 3)  # over 10 s, yet one vector:
    with pytest.raises(UsageError, match="needs --calibrate"):  # no statistics of its own for windows either
        pred.window_probabilities((long, 16000), 2.0, 1.0)
    pred.calibrate(files)  # the held-out speaker's recordings: the statistics training used for them
    got = pred.predict_batch(files)
    for r, g in zip(rows, got):
        for lab in pred.labels:
            assert g[lab] == pytest.approx(float(r[f"p_{lab}"]), abs=1e-4)

    # functionals are computed at the file's own rate, never resampled
    rates = []
    real = rp.functionals
    monkeypatch.setattr(rp, "functionals", lambda name, wav, sr, trim_db: rates.append((sr, trim_db)) or real(name, wav, sr, trim_db))
    wav = sf.read(files[0], dtype="float32")[0]
    sf.write(tmp_path / "hi.wav", np.interp(np.arange(len(wav) * 22050 // 16000) * 16000 / 22050,
                                            np.arange(len(wav)), wav).astype(np.float32), 22050)
    pred.predict(tmp_path / "hi.wav")
    assert rates == [(22050, 30)]  # and silence trimmed as in training
    monkeypatch.setattr(rp, "functionals", real)

    # late fusion of the log-mel CNN (front end in the graph) and the functionals model
    cnn = EmotionPredictor(cnn_path)
    cnn.calibrate(files)
    fused = FusedPredictor([cnn_path, tmp_path / "lin.onnx"], weights=[1, 3])
    fused.calibrate(files)
    both = fused.predict_batch(files[:4])
    for f, b, g in zip(files, both, got):
        c = cnn.predict(f)
        for lab in fused.labels:
            assert b[lab] == pytest.approx(0.25 * c[lab] + 0.75 * g[lab], abs=1e-4)  # batched vs alone
    windows = fused.predict_windows(files[0], 1.0, 0.5)
    assert windows and abs(sum(windows[0]["probabilities"].values()) - 1) < 1e-5
    with pytest.raises(UsageError, match="one non-negative weight a member"):
        FusedPredictor([cnn_path, tmp_path / "lin.onnx"], weights=[1])

    calibration = [arg for f in files for arg in ("--calibrate", f)]
    done = cli("predict", cnn_path, *files[:2], "--fuse", tmp_path / "lin.onnx", *calibration, "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expected = [0.5 * cnn.predict(f)[lab] + 0.5 * g[lab] for f, g in zip(files[:2], got) for lab in fused.labels]
    assert [c["probabilities"][lab] for c in printed for lab in fused.labels] == pytest.approx(expected, abs=1e-5)
    uncalibrated = cli("predict", cnn_path, files[0], "--fuse", tmp_path / "lin.onnx")
    assert uncalibrated.returncode == 2 and "--calibrate" in uncalibrated.stderr
    bad = cli("predict", cnn_path, files[0], "--weights", "1", "2")
    assert bad.returncode == 2 and "--weights go with --fuse" in bad.stderr


def test_a_projection_goes_into_the_graph(synth_corpus, tmp_path):
    """data.nap: the nuisance projection is applied inside the exported graph (parity holds, metadata stays small)."""
    import onnxruntime as ort

    run_experiment(load_config(REPO / "configs" / "fc_mfcc.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.normalize=global", "data.nap=1", "data.split.val=0",
        "data.split.test=1", "training.early_stopping.select=last", "training.early_stopping.patience=0",
        "training.epochs=3", f"features.cache_dir={tmp_path / 'c'}"]), "nap", tmp_path / "runs", progress=False)
    assert len(json.loads((tmp_path / "runs" / "nap" / "metrics.json").read_text())["normalizer"]["nap"]) == 1
    report = export_run(tmp_path / "runs" / "nap", tmp_path / "nap.onnx")
    assert report["max_abs_diff"] < 1e-3
    meta = ort.InferenceSession(str(tmp_path / "nap.onnx")).get_modelmeta().custom_metadata_map
    assert "nap" not in json.loads(meta["emodet.normalizer"])  # the matrix lives in the graph


_STEM = pytest.mark.skipif(not __import__("emodet.features.encoders.smart_turn", fromlist=["x"]).is_fetched(),
                           reason="the offline encoder is not fetched: run `emodet encoders fetch` (CI does)")


@pytest.mark.parametrize("config,ref", [("edge_dscnn", None), ("edge_dscnn", "max"),
                                        pytest.param("edge_student", None, marks=_STEM),
                                        pytest.param("edge_stem_finetune", None, marks=_STEM)])
def test_edge_student_takes_raw_audio_of_any_length_and_matches_pytorch(synth_corpus, tmp_path, config, ref):
    """configs/edge_student.yaml (the stem), edge_stem_finetune.yaml (the stem trained) and edge_dscnn.yaml (issue
    23): the export takes raw 16 kHz audio of any length, is
    under 1 MB, needs nothing at deployment, and its logits equal PyTorch's (front end + training statistics +
    model) within 1e-3; with ``features.params.ref: max`` (level relative to each recording's loudest bin) in the
    graph too, so a recording 30 dB quieter gets the same answer. int8 is smaller still and agrees."""
    import onnx
    import torch

    from emodet.config import load_config
    from emodet.export.onnx import export_run
    from emodet.features import compute_feature
    from emodet.runs import load_predictor, load_run
    from emodet.workflows.experiment import run_experiment

    cfg = load_config(REPO / "configs" / f"{config}.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.test=1", "training.epochs=1",
        "training.augment.waveform.copies=0", f"features.cache_dir={tmp_path / 'cache'}",
        *([f"features.params.ref={ref}"] if ref else [])])
    run_experiment(cfg, "student", tmp_path, progress=False)
    exported = export_run(tmp_path / "student", tmp_path / "student.onnx", with_features=True, quantize="int8")
    path = exported["path"]
    assert Path(path).stat().st_size < 1_000_000
    assert exported["int8_bytes"] < 0.6 * Path(path).stat().st_size and exported["int8_agreement"] >= 0.9
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["audio", "audio_lengths"]  # raw audio in: nothing else needed
    pred = EmotionPredictor(path)
    assert not pred.needs_calibration
    info, model = load_run(tmp_path / "student"), load_predictor(tmp_path / "student")
    mean = np.asarray(info.normalizer.get("mean", 0.0), np.float32).reshape(-1, 1)  # mode none: the model normalises
    std = np.asarray(info.normalizer.get("std", 1.0), np.float32).reshape(-1, 1)
    wav = sf.read(sorted((synth_corpus / "sad").glob("*.wav"))[0], dtype="float32")[0]
    rng = np.random.default_rng(0)
    # 75 ms, just over the dscnn's training crop, 11 s (the stem: 7.5 s, one window of its encoder)
    for n in (1200, 16000 * 3 + 77, 16000 * 11 if config == "edge_dscnn" else 16000 * 15 // 2):
        audio = np.resize(wav, n) + rng.normal(0, 1e-3, n).astype(np.float32)
        ours = pred.logits([audio])[0]
        feats = (compute_feature(info.feature, audio, 16000, info.feature_params) - mean) / std
        x = torch.from_numpy(feats[None].astype(np.float32))
        with torch.no_grad():
            want = model(x, torch.tensor([x.shape[-1]]))[0].numpy()
        np.testing.assert_allclose(ours, want, atol=1e-3, rtol=1e-3)
        if ref == "max":
            quiet = pred.logits([audio * np.float32(10 ** (-30 / 20))])[0]
            np.testing.assert_allclose(quiet, ours, atol=1e-3, rtol=1e-3)
    if config != "edge_dscnn":  # windows longer than the encoder's 8 s are cut within it, as predict cuts them
        long = np.resize(wav, 16000 * 10)
        first = pred.predict_windows((long, 16000), 10.0, 5.0)[0]
        np.testing.assert_allclose(list(first["probabilities"].values()), pred.probabilities([(long, 16000)])[0], atol=1e-6)


@_STEM
def test_an_encoder_models_statistics_take_recordings_longer_than_its_window(synth_corpus, tmp_path):
    """A per-speaker model on an encoder (the graph takes at most 8 s) calibrates on a 12 s recording (a vector a
    window, as predict cuts it) and answers; a 12 s recording's windows alone are too few vectors for statistics
    of their own: refused with the usual message, never an ONNX Runtime error. Silence or a 0.1 s clip is answered
    with a warning that the answer is a guess."""
    from emodet.config import load_config
    from emodet.export.onnx import export_run
    from emodet.workflows.experiment import run_experiment

    cfg = load_config(REPO / "configs" / "edge_student.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.test=1", "data.normalize=speaker",
        "training.augment.waveform.copies=0", "training.distill.weight=0", f"features.cache_dir={tmp_path / 'cache'}"])
    run_experiment(cfg, "spk", tmp_path, progress=False)
    path = export_run(tmp_path / "spk", tmp_path / "spk.onnx", with_features=True)["path"]
    wavs = [sf.read(p, dtype="float32")[0] for p in sorted(synth_corpus.rglob("*.wav"))[:12]]
    long = np.concatenate(wavs)[: 16000 * 12]
    assert len(long) == 16000 * 12
    pred = EmotionPredictor(path)
    with pytest.raises(UsageError, match="needs --calibrate"):
        pred.predict_windows((long, 16000), 2.0, 1.0)
    pred.calibrate([(long, 16000), (wavs[0], 16000)])
    assert set(pred.predict((long, 16000))) == set(pred.labels)
    # an answer on silence or a tenth of a second is given, and said to be a guess
    from emodet.runtime.outputs import LittleSoundWarning

    for audio, why in ((np.zeros(32000, np.float32), "recording 1: digital silence"), (wavs[0][:1600], "0.10 s long")):
        with pytest.warns(LittleSoundWarning, match=why):
            pred.predict((audio, 16000))


def test_the_graphs_front_end_computes_the_level_reference(tmp_path):
    """A spectral front end as it goes into an exported graph (``DeployModel``), in ONNX Runtime: equal to the
    features training computes, with ``ref: max`` as without (and the two differ: the reference really is in the
    graph); in a padded batch each item's loudest bin is its own (a short item ending in its loudest sound gets
    what it gets alone)."""
    import onnxruntime as ort
    import torch

    from emodet.export.graph import export_onnx
    from emodet.export.onnx import DeployModel, graph_front_end, graph_inputs
    from emodet.features import compute_feature, get_feature_spec, resolve_params

    class Features(torch.nn.Module):  # the "model" hands the front end's output back
        def forward(self, x, lengths):
            return x

    wav = (speechlike(16000, 1.1) * 0.3).astype(np.float32)
    tone = np.sin(2 * np.pi * 1000 * np.arange(100) / 16000)
    short = np.concatenate([wav[:8059] * 0.3, tone]).astype(np.float32)  # its loudest sound at its very end
    batch = np.zeros((2, len(wav)), np.float32)
    batch[0], batch[1, : len(short)] = wav, short
    outs = {}
    for ref in (None, "max"):
        params = resolve_params("logmel", {"ref": ref})
        deploy = DeployModel(Features(), graph_front_end(get_feature_spec("logmel"), 16000, params), 160, {})
        example, names, shapes = graph_inputs(16000, 160, 64, True, False)
        path = export_onnx(deploy, tmp_path / f"front_{ref}.onnx", example, names, shapes, output_names=("features",))
        session = ort.InferenceSession(str(path))
        outs[ref] = session.run(None, {"audio": wav[None], "audio_lengths": np.array([len(wav)])})[0][0]
        np.testing.assert_allclose(outs[ref], compute_feature("logmel", wav, 16000, params), atol=2e-3)
        both = session.run(None, {"audio": batch, "audio_lengths": np.array([len(wav), len(short)])})[0]
        alone = compute_feature("logmel", short, 16000, params)
        np.testing.assert_allclose(both[1, :, : alone.shape[1]], alone, atol=2e-3)
    assert outs["max"].max() == pytest.approx(0.0, abs=1e-4) and abs(outs[None].max()) > 1


@pytest.mark.slow  # three corpora, a training and an export (~25 s each)
@pytest.mark.parametrize("whiten", ["none", "coral"])
def test_a_per_corpus_model_adapts_to_a_new_domain_as_training_normalised(tmp_path, whiten):
    """data.normalize: corpus (issue 18): trained on two corpora, each by its own statistics; the export says it
    needs adaptation and refuses without it; after adapt() on a third corpus's unlabelled recordings its logits
    equal PyTorch's on that corpus normalised by its own statistics (``data.whiten``: and whitened by its own
    matrix, which the graph takes as an input)."""
    import torch

    from emodet.data.normalize import Normalizer
    from emodet.data.synth import generate_corpus
    from emodet.features import compute_feature
    from emodet.runs import load_predictor, load_run
    from emodet.workflows.experiment import run_experiment

    for name, seed in (("a", 1), ("b", 2), ("new", 3)):
        generate_corpus(tmp_path / name, per_class=2, speakers=3, seed=seed)
    done = cli("data", "prepare", "--corpus", "folder", "--root", tmp_path / "a", "--corpus", "folder", "--root",
               tmp_path / "b", "--out", tmp_path / "ab.csv", "--val", "0", "--test", "0")
    assert done.returncode == 0, done.stderr
    cfg = load_config(REPO / "configs" / "fc_mfcc.yaml", [
        f"data.manifest={tmp_path / 'ab.csv'}", "data.normalize=corpus", "data.split.val=0", "data.split.test=0",
        "training.epochs=3", "training.early_stopping.patience=0", "training.early_stopping.select=last",
        f"features.cache_dir={tmp_path / 'cache'}", f"data.whiten={whiten}"])
    run_experiment(cfg, "percorpus", tmp_path, progress=False)
    # the run's config kept fc_mfcc.yaml's placeholder root: its paths are relative to its manifest, as in training
    evaluated = cli("evaluate", tmp_path / "percorpus", "--split", "train")
    assert evaluated.returncode == 0 and "DATA_ROOT_PLACEHOLDER" not in evaluated.stderr, evaluated.stderr
    path = export_run(tmp_path / "percorpus", tmp_path / "percorpus.onnx", with_features=True)["path"]
    pred = EmotionPredictor(path)
    assert pred.needs == "adapt" and pred.needs_calibration
    assert ("norm_whiten" in pred.input_names) == (whiten != "none")
    files = sorted((tmp_path / "new").rglob("*.wav"))
    with pytest.raises(UsageError, match="normalises its features per corpus and needs --adapt DIR"):
        pred.predict(files[0])
    long = np.concatenate([sf.read(f, dtype="float32")[0] for f in files])  # a long recording adapts on itself
    with pytest.warns(CalibrationWarning, match="give --adapt recordings of the domain to use those instead"):
        pred.window_probabilities((long, 16000), 2.0, 1.0)
    pred.adapt(files)
    ours = pred.logits([sf.read(f, dtype="float32")[0] for f in files[:4]])
    info, model = load_run(tmp_path / "percorpus"), load_predictor(tmp_path / "percorpus")
    feats = {f: compute_feature(info.feature, sf.read(f, dtype="float32")[0], 16000, info.feature_params) for f in files}
    norm = Normalizer.fit("corpus", [{"path": f, "corpus": "new"} for f in files], lambda r: feats[r["path"]],
                          whiten=whiten)
    if whiten != "none":  # the whitening changes the answer: a graph that ignored its input would fail below
        plain = Normalizer.fit("corpus", [{"path": f, "corpus": "new"} for f in files], lambda r: feats[r["path"]])
        assert np.abs(norm(feats[files[0]], {"corpus": "new"}) - plain(feats[files[0]], {"corpus": "new"})).max() > 0.1
    for f, got in zip(files[:4], ours):
        x = torch.from_numpy(norm(feats[f], {"corpus": "new"})[None].astype(np.float32))
        with torch.no_grad():
            ref = model(x, torch.tensor([x.shape[-1]]))[0].numpy()
        np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-3)
