"""Pretrained speech encoders as features (emodet.features.encoders): front end against transformers, the offline
encoder against its own graph, every transformers family on a tiny random checkpoint from features to runtime."""

import json
import math
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from emodet.core.errors import UsageError
from emodet.features import compute_feature
from emodet.features.encoders import smart_turn
from emodet.features.encoders.whisper import WhisperFrontEnd

from conftest import REPO, cli

transformers = pytest.importorskip("transformers")
FETCHED = pytest.mark.skipif(not smart_turn.is_fetched(), reason="the offline encoder is not fetched: run "
                                                                 "`emodet encoders fetch` (CI does)")
SR = 16000


def speech(seconds=1.6, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 140 + 40 * np.sin(2 * np.pi * 2 * t)
    x = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / SR) / k for k in range(1, 25)) * (np.sin(2 * np.pi * 3 * t) > -0.4)
    return (0.2 * x / np.abs(x).max() + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("normalize", [False, True])
def test_whisper_log_mel_equals_transformers_extractor(normalize):
    from transformers import WhisperFeatureExtractor

    x = speech(2.3)
    ref = WhisperFeatureExtractor(feature_size=80).__call__(x, sampling_rate=SR, padding=False, do_normalize=normalize,
                                                            return_tensors="np").input_features[0]
    ours, frames = WhisperFrontEnd(do_normalize=normalize)(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    assert ours.shape[-1] == ref.shape[-1] == int(frames[0])
    np.testing.assert_allclose(ours[0].numpy(), ref, atol=1e-4)
    # in a batch, padded: the same frames as alone (reflect padding at each item's own end, per-item peak)
    batch = torch.zeros(2, len(x) + 7000)
    batch[0, : len(x)], batch[1] = torch.from_numpy(x), torch.randn(len(x) + 7000) * 0.1
    padded, _ = WhisperFrontEnd(do_normalize=normalize)(batch, torch.tensor([len(x), len(x) + 7000]))
    np.testing.assert_allclose(padded[0, :, : ours.shape[-1]].numpy(), ours[0].numpy(), atol=1e-5)


def test_the_stem_is_the_encoders_input_embedding_factored():
    """``WhisperStem`` (the edge student's front end, issue 23): at full rank it is the encoder's hidden state 0
    (its positions computed, not stored), alone and in a padded batch; at lower ranks each convolution holds
    ``r (in k + out)`` weights; the two-stage DFT front end it uses equals the one-stage one."""
    from emodet.features.encoders.whisper import WhisperEncoder, WhisperStem

    torch.manual_seed(0)
    encoder = WhisperEncoder(80, 48, 1, 4, 96, 400).eval()
    inv = torch.exp(torch.arange(24, dtype=torch.float64) * (-math.log(10000.0) / 23))  # Whisper's sinusoids
    angle = torch.arange(400, dtype=torch.float64)[:, None] * inv
    with torch.no_grad():
        encoder.embed_positions.weight.copy_(torch.cat([torch.sin(angle), torch.cos(angle)], 1))
    weights = {k: v.numpy() for k, v in encoder.state_dict().items()}
    x = np.concatenate([speech(2.3), np.zeros(len(speech(2.5)) - len(speech(2.3)), np.float32)])
    audio, lengths = torch.from_numpy(np.stack([x, speech(2.5, seed=1)])), torch.tensor([len(speech(2.3)), len(x)])
    front, front2 = WhisperFrontEnd(), WhisperFrontEnd(two_stage=True)
    mel, frames = front(audio, lengths)
    np.testing.assert_allclose(front2(audio, lengths)[0].numpy(), mel.numpy(), atol=5e-5)
    with torch.no_grad():
        want, want_len = encoder(mel, frames)
        got, got_len = WhisperStem(weights, (48, 48))(mel, frames)  # full ranks: min(out, in x kernel)
        alone, _ = WhisperStem(weights, (48, 999))(mel[:1, :, : int(frames[0])], frames[:1])
    assert got.shape[0] == 1 and torch.equal(got_len, want_len)
    for i in range(2):
        np.testing.assert_allclose(got[0, i, : int(got_len[i])].numpy(), want[0, i, : int(want_len[i])].numpy(), atol=1e-4)
    np.testing.assert_allclose(alone[0, 0].numpy(), got[0, 0, : alone.shape[2]].numpy(), atol=1e-5)
    for bad in ("smart-turn-v3.2-stem-0x8", "smart-turn-v3.2-stem-241x96", "smart-turn-v3.2-stemm", "smart-turn-v3.2-stem-48"):
        with pytest.raises(UsageError, match="ranks 1 to 240 and 1 to 384"):
            smart_turn.stem_ranks(bad)
    assert smart_turn.stem_ranks("smart-turn-v3.2-stem") == (64, 96) and smart_turn.stem_ranks("smart-turn-v3.2") is None
    assert smart_turn.stem_ranks("smart-turn-v3.2-stem-48x64") == (48, 64)
    small = WhisperStem(weights, (8, 16))
    assert sum(p.numel() for p in small.conv1.parameters()) == 8 * (80 * 3 + 48) + 48
    assert sum(p.numel() for p in small.conv2.parameters()) == 16 * (48 * 3 + 48) + 48


@FETCHED
def test_offline_encoder_equals_its_onnx_graph_in_float():
    """The converted weights give the Smart Turn graph's hidden states (its activation int8 steps removed and
    ONNX Runtime's fusions off, so both compute in float)."""
    import onnx
    import onnxruntime as ort

    from emodet.features.encoders.whisper import WhisperEncoder

    config, weights = smart_turn.load_smart_turn()
    encoder = WhisperEncoder(80, config["d_model"], config["layers"], config["heads"], config["ffn"], config["max_positions"])
    encoder.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    model = onnx.load(str(smart_turn.smart_turn_dir() / "model.onnx"))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    quantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    bypass = {n.output[0]: quantized[n.input[0]] for n in graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in quantized}
    kept = [n for n in graph.node if n.output[0] not in quantized and n.output[0] not in bypass]
    for n in kept:
        n.input[:] = [bypass.get(x, x) for x in n.input]
    del graph.node[:]
    graph.node.extend(kept)
    states = ["add_20", "add_146", "add_268", "add_390", "layer_norm_8"]  # embedding, layers 1-3, final norm
    graph.output.extend(onnx.helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, None) for s in states)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    padded = np.zeros(128000, np.float32)
    padded[-len(speech()):] = speech()
    mel, frames = WhisperFrontEnd(do_normalize=True)(torch.from_numpy(padded)[None], torch.tensor([128000]))
    theirs = session.run(states, {"input_features": mel.numpy()})
    with torch.no_grad():
        ours, _ = encoder(mel, frames)
    for i, ref in enumerate(theirs):
        np.testing.assert_allclose(ours[i, 0].numpy(), ref[0], atol=2e-3 * max(1.0, np.abs(ref).max() / 10))


@FETCHED
def test_encoder_feature_views_batches_and_the_cache(tmp_path):
    from emodet.data.cache import FeatureCache
    from emodet.features.encoders.feature import compute_batch, ENCODER_DEFAULTS

    x, y = speech(1.6, 0), speech(2.5, 1)
    full = compute_feature("encoder", x, SR, {})
    assert full.shape == (5 * 2 * 384, 1)
    layer2 = compute_feature("encoder", x, SR, {"layers": [2]})
    np.testing.assert_array_equal(layer2[:, 0], full.reshape(5, -1)[2])
    odd = speech(1.61, 2)[:16000 + 9 * 160 + 37]  # 1.09 s: an odd number of mel frames, shorter than the others
    alone = [compute_feature("encoder", w, SR, {}) for w in (x, y, odd)]
    batched = compute_batch([x, y, odd], SR, dict(ENCODER_DEFAULTS))
    for a, b in zip(alone, batched):  # the same states alone as padded in a batch (odd lengths too)
        np.testing.assert_allclose(a, b, atol=1e-4)
    frames = compute_batch([odd, y], SR, {**ENCODER_DEFAULTS, "pooling": "none"})[0]
    np.testing.assert_allclose(frames, compute_feature("encoder", odd, SR, {"pooling": "none"}), atol=1e-4)
    long = np.tile(y, 4)  # 10 s: two windows of 5 s, their states pooled together
    assert compute_feature("encoder", long, SR, {"window_seconds": 8.0}).shape == full.shape
    with pytest.raises(UsageError, match="'layers': 7 is not a hidden state"):
        compute_feature("encoder", x, SR, {"layers": [7]})
    with pytest.raises(UsageError, match="longer than encoder"):
        compute_feature("encoder", x, SR, {"window_seconds": 30})
    for i, w in enumerate((x, y)):
        sf.write(tmp_path / f"a{i}.wav", w, SR)
    assert FeatureCache(tmp_path / "c", "encoder").build(tmp_path).computed == 2
    sweep = FeatureCache(tmp_path / "c", "encoder", {"layers": [1, 3]})  # a layer sweep computes nothing again
    report = sweep.build(tmp_path)
    assert (report.computed, report.cached) == (0, 2) and sweep.load(tmp_path, "a0.wav").shape == (2 * 768, 1)


def test_missing_or_offline_models_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="a local folder without a config.json.*--set features.params.model=DIR"):
        compute_feature("encoder", speech(), SR, {"model": str(tmp_path)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="not a local folder, and the model hub is off.*huggingface-cli download"):
        compute_feature("encoder", speech(), SR, {"model": "someone/not-here-wav2vec2"})
    monkeypatch.setenv("EMODET_HOME", str(tmp_path / "empty"))
    from emodet.features.encoders import backbones

    backbones.model_info.cache_clear()
    try:
        with pytest.raises(UsageError, match="is not fetched.*emodet encoders fetch"):
            compute_feature("encoder", speech(), SR, {})
    finally:
        backbones.model_info.cache_clear()


def test_fetch_refuses_a_file_that_is_not_the_checked_one(tmp_path, monkeypatch):
    monkeypatch.setenv("EMODET_HOME", str(tmp_path / "home"))
    wheel = tmp_path / "pipecat_ai-1.14.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(smart_turn.MEMBER, b"not the model")
    with pytest.raises(UsageError, match="SHA-256 .* expected 2bb02631"):
        smart_turn.fetch_smart_turn(wheel)
    assert not (tmp_path / "home" / "encoders" / smart_turn.NAME / "config.json").exists()
    done = cli("encoders", "fetch", "--wheel", tmp_path / "nothing.whl")
    assert done.returncode == 2 and "not the pipecat-ai==1.14.0 wheel" in done.stderr


def tiny_checkpoint(family: str, folder):
    """A randomly initialised checkpoint of ``family`` with its feature extractor, written to ``folder``."""
    import transformers as tf

    torch.manual_seed(0)
    if family == "whisper":
        config = tf.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                                  decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                                  max_source_positions=150, max_target_positions=32, vocab_size=100, pad_token_id=0,
                                  bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                  init_std=0.2)  # states that differ between recordings more than float rounding
        tf.WhisperModel(config).save_pretrained(folder)
        tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
        return
    # a stride of 160 samples (100 frames a second; real checkpoints: 320): with 10 samples a frame, WavLM's
    # position bias (batch x heads x frames x frames) took 21 GB for a batch of 1.5 s clips, near this machine's all
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 4), num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=2, initializer_range=0.2)
    if family != "data2vec-audio":
        shape.update(feat_extract_norm="layer", do_stable_layer_norm=True)
    config_class, model_class = {"wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
                                 "hubert": (tf.HubertConfig, tf.HubertModel), "wavlm": (tf.WavLMConfig, tf.WavLMModel),
                                 "data2vec-audio": (tf.Data2VecAudioConfig, tf.Data2VecAudioModel)}[family]
    model_class(config_class(**shape)).save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)


SLOW = pytest.mark.slow


@SLOW  # an export of a transformers model takes 20-80 s here
@pytest.mark.parametrize("family", ["whisper", "wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_every_transformers_family_from_features_to_the_runtime(family, tmp_path, synth_corpus):
    """features -> cache -> train -> evaluate -> export (the encoder in the graph) -> torch-free runtime."""
    from emodet.runtime import EmotionPredictor

    tiny_checkpoint(family, tmp_path / family)
    window = ["--set", "features.params.window_seconds=3"] if family == "whisper" else []
    train = cli("train", "--config", REPO / "configs" / "encoder_whisper_linear.yaml", "--run-name", family,
                "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set", "data.corpus=folder",
                "--set", "data.split.test=1", "--set", f"features.params.model={tmp_path / family}", *window,
                "--set", f"features.cache_dir={tmp_path / 'cache'}", "--set", "training.epochs=2", "--no-progress")
    assert train.returncode == 0, train.stderr
    config = json.loads((next((tmp_path / "cache").glob("encoder-*")) / "config.json").read_text())
    assert config["identity"]["model_hash"]  # the checkpoint's content hash keys the cache
    evaluated = cli("evaluate", tmp_path / "runs" / family)
    assert evaluated.returncode == 0, evaluated.stderr
    export = cli("export", tmp_path / "runs" / family, "--out", tmp_path / f"{family}.onnx")
    assert export.returncode == 0, export.stderr
    assert "logit difference on real inputs" in export.stdout
    pred = EmotionPredictor(tmp_path / f"{family}.onnx")
    assert pred.needs == "nothing" and pred.with_features
    clip = sorted(synth_corpus.rglob("*.wav"))[0]
    got = pred.predict(clip)
    expected = json.loads(cli("predict", tmp_path / f"{family}.onnx", clip, "--json").stdout)[0]["probabilities"]
    assert got == pytest.approx(expected, abs=1e-6) and sum(got.values()) == pytest.approx(1, abs=1e-5)


@SLOW  # two encoder feature passes and an export of the encoder graph (~1-2 min here)
@FETCHED
def test_the_general_recipe_from_two_corpora_to_one_new_recording(tmp_path):
    """README "Which model for my recordings": configs/general.yaml trained on a manifest over two corpora (every
    speaker), exported with the encoder in the graph, answers on one recording of a third corpus with no
    calibration, and `evaluate --manifest` gives its figure on that corpus."""
    from emodet.data.synth import generate_corpus
    from emodet.runtime import EmotionPredictor

    for name, seed in (("a", 1), ("b", 2), ("new", 3)):
        generate_corpus(tmp_path / name, per_class=2, speakers=3, seed=seed)
    prepared = cli("data", "prepare", "--corpus", "folder", "--root", tmp_path / "a", "--corpus", "folder", "--root",
                   tmp_path / "b", "--out", tmp_path / "ab.csv", "--labels", "neutral,happy,sad,angry")
    assert prepared.returncode == 0, prepared.stderr
    other = cli("data", "prepare", "--corpus", "folder", "--root", tmp_path / "new", "--out", tmp_path / "new.csv",
                "--labels", "neutral,happy,sad,angry")
    assert other.returncode == 0, other.stderr
    common = ["--runs-dir", tmp_path / "runs", "--no-progress", "--no-report"]
    train = cli("train", "--config", REPO / "configs" / "general.yaml", "--run-name", "general", *common,
                "--set", f"data.manifest={tmp_path / 'ab.csv'}", "--set", "data.split.method=speaker",
                "--set", "data.split.test=0", "--set", "data.nap=2", "--set", f"features.cache_dir={tmp_path / 'cache'}")
    assert train.returncode == 0, train.stderr
    assert "48 train" in train.stdout and "trained on every speaker" in train.stdout  # 2 corpora x 3 speakers x 4 x 2
    exported = cli("export", tmp_path / "runs" / "general", "--out", tmp_path / "general.onnx", "--with-features")
    assert exported.returncode == 0, exported.stderr
    pred = EmotionPredictor(tmp_path / "general.onnx")
    assert pred.needs == "nothing" and not pred.needs_calibration
    clip = sorted((tmp_path / "new").rglob("*.wav"))[0]
    got = pred.predict(clip)
    assert set(got) == {"neutral", "happy", "sad", "angry"} and sum(got.values()) == pytest.approx(1, abs=1e-5)
    evaluated = cli("evaluate", tmp_path / "runs" / "general", "--manifest", tmp_path / "new.csv", "--data-root",
                    tmp_path / "new", "--split", "all")
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "runs" / "general" / "eval_new_all.json").is_file() and "24 recordings" in evaluated.stdout


def test_fine_tuned_top_layers_start_as_the_encoder_and_refuse_other_features(tmp_path):
    """encoder_top: at initialisation its frames are the encoder's next hidden state, exactly (a batch with
    padding included); its pretrained layers train at their own learning rate; features it cannot continue,
    other encoder families and impossible layer choices are refused with what to set."""
    from emodet.config import load_config
    from emodet.models import build_model, check_model_features
    from emodet.training.optim import make_optimizer

    tiny_checkpoint("whisper", tmp_path / "whisper")  # 2 layers, 32 dims
    model = str(tmp_path / "whisper")
    params = {"model": model, "layers": "all", "pooling": "none", "window_seconds": 3.0, "pad_to_window": False,
              "trim_db": None, "dtype": "float32"}
    states = [f.reshape(3, 32, -1) for f in (compute_feature("encoder", speech(s, seed), SR, params)
                                             for s, seed in ((1.0, 0), (1.6, 1)))]
    for from_layer, layers in ((0, 1), (0, 2), (1, 1)):  # the last choices end with the final layer norm
        top = build_model("encoder_top", 4, (32, None), encoder=model, from_layer=from_layer, layers=layers).eval()
        t = max(s.shape[-1] for s in states)
        x = torch.zeros(2, 32, t)
        for i, s in enumerate(states):
            x[i, :, : s.shape[-1]] = torch.from_numpy(s[from_layer])
        lengths = torch.tensor([s.shape[-1] for s in states])
        with torch.no_grad():
            frames, _ = top.frames(x, lengths)
            logits = top(x, lengths)
        for i, s in enumerate(states):
            np.testing.assert_allclose(frames[i, : s.shape[-1]].numpy().T, s[from_layer + layers], atol=1e-4, rtol=1e-4)
        assert logits.shape == (2, 4)
    cfg = load_config(REPO / "configs" / "encoder_whisper_finetune.yaml")
    optimizer = make_optimizer(top, cfg.training)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.001, 0.001 * 0.05])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(top.parameters()))
    ok = {"model": model, "layers": [1], "pooling": "none"}
    check_model_features("encoder_top", "base", {"encoder": model, "from_layer": 1}, "encoder", ok)
    with pytest.raises(UsageError, match=r"needs features.type: encoder with params \{layers: \[1\], pooling: none\}"):
        check_model_features("encoder_top", "base", {"encoder": model, "from_layer": 1}, "encoder",
                             {**ok, "pooling": "meanstd"})
    with pytest.raises(UsageError, match="got features.type 'logmel'"):
        check_model_features("encoder_top", "base", {"encoder": model, "from_layer": 1}, "logmel", {})
    with pytest.raises(UsageError, match="is not the features' encoder"):
        check_model_features("encoder_top", "base", {"from_layer": 1}, "encoder", ok)
    with pytest.raises(UsageError, match=r"got layers \[1\] and pooling 'meanstd'"):  # the feature's defaults filled
        check_model_features("encoder_top", "base", {"encoder": model, "from_layer": 1}, "encoder",
                             {"model": model, "layers": [1]})
    with pytest.raises(UsageError, match="from_layer 1 and layers 2.*at most 2"):
        check_model_features("encoder_top", "base", {"encoder": model, "from_layer": 1, "layers": 2}, "encoder", ok)
    with pytest.raises(UsageError, match="from_layer 1 and layers 2.*at most 2"):
        build_model("encoder_top", 4, (32, None), encoder=model, from_layer=1, layers=2)
    check_model_features("encoder_top", "base", {"encoder": model, "from_layer": 1}, "encoder", {**ok, "layers": [-2]})
    for bad, match in (({"layers": 0}, "layers 0: fine-tune at least 1 layer"),
                       ({"from_layer": 2}, "from_layer from 0 to 1")):
        with pytest.raises(UsageError, match=match):
            check_model_features("encoder_top", "base", {"encoder": model, "from_layer": 1, **bad}, "encoder", ok)
    with pytest.raises(UsageError, match="model.params.from_layer of encoder_top must be a whole number, got 'x'"):
        check_model_features("encoder_top", "base", {"encoder": model, "from_layer": "x"}, "encoder", ok)
    with pytest.raises(UsageError, match="set features.params.pad_to_window: false"):
        check_model_features("encoder_top", "base", {"encoder": model, "from_layer": 1}, "encoder",
                             {**ok, "pad_to_window": True})
    with pytest.raises(UsageError, match="encoder_lr_scale -1: a factor of the head's learning rate, 0 or more"):
        build_model("encoder_top", 4, (32, None), encoder=model, from_layer=1, encoder_lr_scale=-1)
    with pytest.raises(UsageError, match="64 features a frame.*has 32"):
        build_model("encoder_top", 4, (64, None), encoder=model, from_layer=1)
    tiny_checkpoint("wav2vec2", tmp_path / "w2v")
    w2v = str(tmp_path / "w2v")
    with pytest.raises(UsageError, match="is a wav2vec2 model.*layer_sum"):
        check_model_features("encoder_top", "base", {"encoder": w2v, "from_layer": 1}, "encoder", {**ok, "model": w2v})
    with pytest.raises(UsageError, match="not a Whisper-family encoder.*layer_sum"):
        build_model("encoder_top", 4, (32, None), encoder=w2v)


def test_whisper_layers_run_in_half_precision():
    """Masked attention fills with the dtype's own minimum (-1e9 overflows float16): a half-precision layer
    (GPU autocast, encoder features with dtype float16) gives the float32 layer's output within fp16 rounding."""
    from emodet.features.encoders.whisper import WhisperLayer

    torch.manual_seed(0)
    layer = WhisperLayer(32, 4, 64)
    x, mask = torch.randn(2, 10, 32), torch.arange(10)[None, :] < torch.tensor([[10], [6]])
    half = layer.half()(x.half(), mask).float()
    torch.testing.assert_close(half, layer.float()(x, mask), atol=2e-2, rtol=2e-2)


@SLOW  # a training, an export with the encoder in the graph, the runtime (~30 s here)
def test_a_fine_tuned_encoder_from_training_to_the_runtime(tmp_path, synth_corpus):
    """The fine-tuning config on a tiny Whisper checkpoint: trains (the copied layer moves), exports with the
    frozen encoder and the tuned layer in one graph, and the torch-free runtime answers one recording
    with nothing of its speaker, as PyTorch does."""
    from emodet.runtime import EmotionPredictor

    tiny_checkpoint("whisper", tmp_path / "whisper")
    model = tmp_path / "whisper"
    train = cli("train", "--config", REPO / "configs" / "encoder_whisper_finetune.yaml", "--run-name", "ft",
                "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set", "data.corpus=folder",
                "--set", "data.split.test=1", "--set", f"features.params.model={model}",
                "--set", "features.params.window_seconds=3", "--set", f"model.params.encoder={model}",
                "--set", "model.params.from_layer=1", "--set", "features.params.layers=[1]",
                "--set", f"features.cache_dir={tmp_path / 'cache'}", "--set", "training.epochs=2", "--no-progress")
    assert train.returncode == 0, train.stderr
    from emodet.training.checkpoint import load_checkpoint

    tuned = load_checkpoint(tmp_path / "runs" / "ft" / "checkpoints" / "best.pt")["model"]
    from emodet.features.encoders.backbones import build_backbone

    pretrained = build_backbone(str(model), 3.0).encoder.layers[1].fc1.weight
    assert not torch.allclose(tuned["layers.0.fc1.weight"], pretrained)  # the copied layer trained
    export = cli("export", tmp_path / "runs" / "ft", "--out", tmp_path / "ft.onnx")
    assert export.returncode == 0, export.stderr
    pred = EmotionPredictor(tmp_path / "ft.onnx")
    assert pred.needs == "nothing" and pred.with_features
    assert "logit difference on real inputs" in export.stdout
    from emodet.core.audio import load_audio
    from emodet.runs import load_predictor, load_run

    info, clip = load_run(tmp_path / "runs" / "ft"), sorted(synth_corpus.rglob("*.wav"))[0]
    x = torch.from_numpy(compute_feature("encoder", load_audio(clip, SR), SR, info.feature_params))[None]
    with torch.no_grad():
        expected = torch.softmax(load_predictor(tmp_path / "runs" / "ft")(x, torch.tensor([x.shape[-1]])), 1)[0]
    got = pred.predict(clip)
    assert [got[label] for label in info.labels] == pytest.approx(expected.tolist(), abs=1e-4)
    bad = cli("train", "--config", REPO / "configs" / "encoder_whisper_finetune.yaml", "--run-name", "bad",
              "--data-root", synth_corpus, "--runs-dir", tmp_path / "runs", "--set", "features.params.pooling=mean")
    assert bad.returncode == 2 and "needs features.type: encoder" in bad.stderr
    assert not (tmp_path / "runs" / "bad").exists()


@FETCHED
def test_layer_sum_states_must_be_the_features_hidden_states():
    """layer_sum's ``states`` is checked against the encoder feature before any file is read (it failed at model
    build, after the features were cached): the stem holds 1 state, the offline encoder 5, a chosen list its length."""
    from emodet.models.registry import check_model_features

    for model, layers, want in (("smart-turn-v3.2-stem", "all", 1), ("smart-turn-v3.2", "all", 5),
                                ("smart-turn-v3.2", [1, 2, 3], 3)):
        params = {"model": model, "layers": layers, "pooling": "none"}
        with pytest.raises(UsageError, match=f"set model.params.states={want}"):
            check_model_features("layer_sum", "base", {"states": want + 1}, "encoder", params)
        check_model_features("layer_sum", "base", {"states": want}, "encoder", params)
