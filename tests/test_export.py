import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("onnxruntime")

from emodet.config import load_config
from emodet.errors import UsageError
from emodet.experiment import run_experiment
from emodet.export.onnx import export_run
from emodet.runtime import EmotionPredictor, smooth_segments

from conftest import REPO, run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_corpus):
    """Two small trained runs: fc on MFCC with global statistics, tiny resnet on log-mel per speaker."""
    base = tmp_path_factory.mktemp("runs")
    common = [f"data.root={synth_corpus}", "data.corpus=folder", "data.split.val=1", "data.split.test=1",
              f"features.cache_dir={base / 'cache'}", "training.early_stopping.patience=0"]
    run_experiment(load_config(REPO / "configs" / "fc_mfcc.yaml", common + [
        "data.normalize=global", "data.split.test=0", "training.epochs=40", "training.batch_size=8", "training.lr=0.005"]),
        "fc", base, progress=False)
    run_experiment(load_config(REPO / "configs" / "resnet_logmel.yaml", common + ["model.preset=tiny", "training.epochs=3"]),
                   "res", base, progress=False)
    return base


def test_export_with_and_without_features_parity_and_metadata(runs, tmp_path, synth_corpus):
    import onnxruntime as ort

    for name, with_features in (("fc", False), ("res", True), ("res", False)):
        out = tmp_path / f"{name}{int(with_features)}.onnx"
        report = export_run(runs / name, out, with_features=with_features)
        assert report["max_abs_diff"] < 1e-3
        meta = ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map
        assert json.loads(meta["emodet.labels"]) == ["neutral", "happy", "sad", "angry", "fearful"]
        assert meta["emodet.sample_rate"] == "16000" and meta["emodet.with_features"] == str(int(with_features))
        params = json.loads(meta["emodet.feature_params"])
        assert params["hop_length"] == 160 and params["n_mels"] == 64
        normalizer = json.loads(meta["emodet.normalizer"])
        assert normalizer["mode"] == ("global" if name == "fc" else "speaker")
        if name == "fc":
            assert len(normalizer["mean"]) == 40
    # the runtime equals the PyTorch path, at several lengths, for both kinds of export
    import torch

    from emodet.ensemble import load_predictor
    from emodet.features import compute_feature

    model = load_predictor(runs / "fc")
    stats = json.loads((runs / "fc" / "metrics.json").read_text())["normalizer"]
    pred = EmotionPredictor(tmp_path / "fc0.onnx")
    wav = sf.read(synth_corpus / "sad" / "spk01_sad_000.wav", dtype="float32")[0]
    for n in (4000, 16000, len(wav)):
        feats = compute_feature("mfcc", wav[:n], 16000, {"n_mfcc": 40, "n_mels": 64})
        x = (feats - np.array(stats["mean"])[:, None]) / np.array(stats["std"])[:, None]
        with torch.no_grad():
            ref = torch.softmax(model(torch.from_numpy(x[None].astype(np.float32))), 1)[0].numpy()
        got = np.array(list(pred.predict(wav[:n]).values()))
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_with_features_graph_takes_any_length_and_batches(runs, tmp_path, synth_corpus):
    export_run(runs / "res", tmp_path / "r.onnx", with_features=True)
    pred = EmotionPredictor(tmp_path / "r.onnx")
    files = sorted((synth_corpus / "angry").glob("*.wav"))[:3]
    pred.calibrate(files)
    single = [pred.predict(f) for f in files]
    batch = pred.predict_batch(files)
    for a, b in zip(single, batch):
        assert a == pytest.approx(b, abs=1e-4)
    short = pred.predict(np.zeros(3000, np.float32) + 0.01)
    assert sum(short.values()) == pytest.approx(1.0, abs=1e-5)
    resampled = pred.predict(sf.read(files[0], dtype="float32")[0][::2], sr=8000)
    assert set(resampled) == set(single[0])


def test_int8_is_smaller_and_agrees_with_fp32(runs, tmp_path, synth_corpus):
    import onnx

    from emodet.ensemble import load_predictor

    report = export_run(runs / "res", tmp_path / "q.onnx", with_features=True, quantize="int8")
    model_bytes = sum(p.numel() * 4 for p in load_predictor(runs / "res").parameters())
    # the model's weights go to 8 bits (saving at least 60% of their float size); the front end stays float
    assert report["bytes"] - report["int8_bytes"] > 0.6 * model_bytes
    inits = {i.name: i.data_type for i in onnx.load(str(tmp_path / "q.int8.onnx")).graph.initializer}
    for name in ("frontend.spectrogram.stage1", "frontend.spectrogram.stage2"):
        assert inits[name] == onnx.TensorProto.FLOAT
    for path in (tmp_path / "q.onnx", tmp_path / "q.int8.onnx"):  # the mel bank (97% zeros): exact, stored sparse
        sparse = {t.values.name: t.values.data_type for t in onnx.load(str(path)).graph.sparse_initializer}
        assert sparse == {"frontend.mel.filters": onnx.TensorProto.FLOAT}
    # and the exporter's per-node debug records are not shipped
    assert not any(len(n.metadata_props) for n in onnx.load(str(tmp_path / "q.onnx")).graph.node)
    assert any(t == onnx.TensorProto.INT8 for t in inits.values())
    fp32, int8 = EmotionPredictor(tmp_path / "q.onnx"), EmotionPredictor(tmp_path / "q.int8.onnx")
    files = sorted(synth_corpus.rglob("*.wav"))[::3]
    fp32.calibrate(files[:5])
    int8.calibrate(files[:5])
    agree = np.mean([max(a, key=a.get) == max(b, key=b.get) for a, b in
                     zip(fp32.predict_batch(files), int8.predict_batch(files))])
    assert agree >= 0.8


def test_functionals_feature_cannot_go_into_the_graph(runs, tmp_path):
    from emodet.export.onnx import export_run as export

    cfg_path = runs / "fc" / "metrics.json"
    metrics = json.loads(cfg_path.read_text())
    fake = tmp_path / "fake_run"
    fake.mkdir()
    for item in ("config.yaml", "manifest.csv"):
        (fake / item).write_text((runs / "fc" / item).read_text())
    (fake / "checkpoints").mkdir()
    (fake / "checkpoints" / "best.pt").write_bytes((runs / "fc" / "checkpoints" / "best.pt").read_bytes())
    metrics["features"]["type"] = "egemaps"
    (fake / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(UsageError, match="feature 'egemaps' cannot go inside an ONNX graph.*export without --with-features"):
        export(fake, tmp_path / "x.onnx", with_features=True)


def test_runtime_never_imports_torch(runs, tmp_path, synth_corpus):
    export_run(runs / "fc", tmp_path / "m.onnx")
    wav = synth_corpus / "happy" / "spk02_happy_001.wav"
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from emodet.runtime import EmotionPredictor\n"
        f"p = EmotionPredictor({str(tmp_path / 'm.onnx')!r})\n"
        f"r = p.predict({str(wav)!r})\n"
        "assert abs(sum(r.values()) - 1) < 1e-5, r\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok', max(r, key=r.get))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
    cli = subprocess.run([sys.executable, "-c", code.split("from emodet.runtime")[0] +
                          f"from emodet.cli import main\nsys.exit(main(['predict', {str(tmp_path / 'm.onnx')!r}, {str(wav)!r}, '--json']))\n"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)[0]["file"] == str(wav)


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


def test_sliding_windows_on_a_synthetic_recording(runs, tmp_path, synth_corpus):
    """Clips of one emotion, then clips of another: the segments change label where the recording does."""
    export_run(runs / "fc", tmp_path / "m.onnx")
    pred = EmotionPredictor(tmp_path / "m.onnx")
    by_label = {}
    for f in sorted(synth_corpus.rglob("*.wav")):
        wav = sf.read(f, dtype="float32")[0]
        probs = pred.predict(wav)
        if max(probs, key=probs.get) == f.parent.name and max(probs.values()) > 0.6:  # clips the model knows
            by_label.setdefault(f.parent.name, []).append(wav)
    first, second = sorted(by_label, key=lambda k: -len(by_label[k]))[:2]
    part_a, part_b = np.concatenate(by_label[first][:3]), np.concatenate(by_label[second][:3])
    change = len(part_a) / 16000
    recording = np.concatenate([part_a, part_b])
    total = len(recording) / 16000
    windows = pred.predict_windows(recording, 2.0, 0.5)
    assert windows[0]["start"] == 0.0 and windows[1]["start"] == 0.5
    assert all(w["end"] - w["start"] <= 2.0 + 1e-6 for w in windows) and windows[-1]["end"] == pytest.approx(total, abs=1e-3)
    segs = smooth_segments(windows)
    assert segs[0]["label"] == first and segs[0]["start"] == 0.0 and segs[-1]["end"] == pytest.approx(total, abs=1e-3)
    boundary = next(s["start"] for s in segs if s["label"] == second)
    assert abs(boundary - change) <= 1.5, (boundary, change, segs)
    path = tmp_path / "long.wav"
    sf.write(path, recording, 16000)
    out = run_cli("predict", tmp_path / "m.onnx", path, "--window", "2", "--hop", "0.5")
    assert out.returncode == 0, out.stderr
    assert first in out.stdout and second in out.stdout and " s  " in out.stdout
    csv_out = run_cli("predict", tmp_path / "m.onnx", path, "--window", "2", "--hop", "0.5", "--csv")
    assert csv_out.stdout.splitlines()[0] == "file,start,end,label,neutral,happy,sad,angry,fearful"


def test_predict_cli_errors(runs, tmp_path, synth_corpus):
    export_run(runs / "fc", tmp_path / "m.onnx")
    (tmp_path / "bad.wav").write_bytes(b"junk")
    good = synth_corpus / "sad" / "spk01_sad_000.wav"
    out = run_cli("predict", tmp_path / "m.onnx", good, tmp_path / "bad.wav")
    assert out.returncode == 1 and "bad.wav: cannot decode" in out.stderr and "spk01_sad_000.wav:" in out.stdout
    assert run_cli("predict", tmp_path / "m.onnx", good, "--window", "1").returncode == 2
    (tmp_path / "not.onnx").write_bytes(b"nope")
    bad_model = run_cli("predict", tmp_path / "not.onnx", good)
    assert bad_model.returncode == 2 and "not a loadable ONNX model" in bad_model.stderr


@pytest.fixture(scope="module")
def functionals_run(tmp_path_factory, synth_corpus):
    """configs/linear_compare.yaml (L-BFGS, per-speaker z-score) on eGeMAPS functionals; one test speaker."""
    pytest.importorskip("opensmile")
    base = tmp_path_factory.mktemp("lin")
    run_experiment(load_config(REPO / "configs" / "linear_compare.yaml", [
        f"data.root={synth_corpus}", "data.corpus=folder", "data.split.test=1", "features.type=egemaps",
        "features.params.trim_db=30", f"features.cache_dir={base / 'cache'}"]), "lin", base, progress=False)
    return base / "lin"


def test_functionals_model_in_the_runtime_equals_training_and_fuses_with_a_cnn(functionals_run, runs, tmp_path, monkeypatch):
    import csv

    import emodet.runtime.predictor as rp
    from emodet.runtime import FusedPredictor

    lin = export_run(functionals_run, tmp_path / "lin.onnx")
    assert lin["max_abs_diff"] < 1e-3
    export_run(runs / "res", tmp_path / "res.onnx", with_features=True)
    with open(functionals_run / "predictions_test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    root = load_config(functionals_run / "config.yaml")["data"]["root"]
    files = [str(Path(root) / r["path"]) for r in rows]
    pred = EmotionPredictor(tmp_path / "lin.onnx")
    assert pred.native_rate and pred.feature == "egemaps"
    with pytest.raises(UsageError, match="calibrate"):  # one recording's functionals have no spread
        pred.predict(files[0])
    with pytest.raises(UsageError, match="needs several recordings"):
        pred.calibrate(files[:1])
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
    cnn = EmotionPredictor(tmp_path / "res.onnx")
    cnn.calibrate(files)
    fused = FusedPredictor([tmp_path / "res.onnx", tmp_path / "lin.onnx"], weights=[1, 3])
    fused.calibrate(files)
    both = fused.predict_batch(files[:4])
    for f, b, g in zip(files, both, got):
        c = cnn.predict(f)
        for lab in fused.labels:
            assert b[lab] == pytest.approx(0.25 * c[lab] + 0.75 * g[lab], abs=1e-4)  # batched vs alone
    windows = fused.predict_windows(files[0], 1.0, 0.5)
    assert windows and abs(sum(windows[0]["probabilities"].values()) - 1) < 1e-5
    with pytest.raises(UsageError, match="one non-negative weight a model"):
        FusedPredictor([tmp_path / "res.onnx", tmp_path / "lin.onnx"], weights=[1])

    out = run_cli("predict", tmp_path / "res.onnx", *files[:2], "--fuse", tmp_path / "lin.onnx",
                  "--calibrate", *files, "--json")
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    expected = [0.5 * cnn.predict(f)[lab] + 0.5 * g[lab] for f, g in zip(files[:2], got) for lab in fused.labels]
    assert [c["probabilities"][lab] for c in cli for lab in fused.labels] == pytest.approx(expected, abs=1e-5)
    uncalibrated = run_cli("predict", tmp_path / "res.onnx", files[0], "--fuse", tmp_path / "lin.onnx")
    assert uncalibrated.returncode == 2 and "--calibrate" in uncalibrated.stderr
    bad = run_cli("predict", tmp_path / "res.onnx", files[0], "--weights", "1", "2")
    assert bad.returncode == 2 and "--weights go with --fuse" in bad.stderr
