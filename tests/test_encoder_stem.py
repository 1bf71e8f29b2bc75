"""encoder_stem (issue 23): the offline encoder's factored input convolutions trained end to end over Whisper log-mel
frames (``whisper-logmel``). It starts exactly where the ``smart-turn-v3.2-stem`` feature is, trains its
convolutions at their own rate, and refuses features it cannot take."""

import numpy as np
import pytest
import torch

from emodet.core.errors import UsageError
from emodet.features.encoders import smart_turn
from emodet.features.encoders.feature import ENCODER_DEFAULTS, compute_batch
from emodet.models import build_model, check_model_features

from conftest import REPO

pytestmark = pytest.mark.skipif(not smart_turn.is_fetched(), reason="the offline encoder is not fetched: run "
                                                                    "`emodet encoders fetch` (CI does)")
SR = 16000
LOGMEL = {**ENCODER_DEFAULTS, "model": "whisper-logmel", "layers": [0], "pooling": "none"}


def voices(seconds=(2.3, 1.1, 8.5)):
    rng = np.random.default_rng(0)
    out = []
    for s in seconds:
        t = np.arange(int(SR * s)) / SR
        x = np.sin(2 * np.pi * (150 + 30 * np.sin(2 * np.pi * 3 * t)) * t) * (np.sin(2 * np.pi * 2 * t) > -0.3)
        out.append((0.3 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
    return out


def batch(mels):
    x = torch.zeros(len(mels), mels[0].shape[0], max(m.shape[1] for m in mels))
    for i, m in enumerate(mels):
        x[i, :, : m.shape[1]] = torch.from_numpy(m)
    return x, torch.tensor([m.shape[1] for m in mels])


def test_the_trained_stem_starts_as_the_stem_feature_and_trains_its_convolutions():
    """At initialisation the pooled frames are the ``smart-turn-v3.2-stem`` feature's mean + std of the same
    recordings (padded in a batch); the log-mel feature is 80 bands at 100 frames a second; a recording longer
    than the encoder's 8 s takes positions again from 0 after 8 s; an optimizer step moves the convolutions at
    0.1 x the head's rate (the shipped config), and a training batch of one works."""
    from emodet.config import load_config
    from emodet.features.encoders.whisper import embed, fused_gelu
    from emodet.training.optim import make_optimizer

    wavs = voices()
    mels = compute_batch(wavs, SR, LOGMEL)
    assert [m.shape for m in mels] == [(80, len(w) // 160) for w in wavs]
    stem = compute_batch(wavs[:2], SR, {**ENCODER_DEFAULTS, "model": "smart-turn-v3.2-stem"})
    model = build_model("encoder_stem", 5, (80, None)).eval()
    pooled = []
    model.norm.register_forward_hook(lambda module, args, out: pooled.append(args[0]))
    with torch.no_grad():
        long, _ = model.frames(*batch(mels[2:]))
        assert long.shape[1] == (mels[2].shape[1] + 1) // 2 > 400
        added = long[0] - embed(model.stem.conv1, model.stem.conv2, *batch(mels[2:]), fused_gelu)[0][0]
        positions = model.stem.positions(400)
        np.testing.assert_allclose(added[:400].numpy(), positions.numpy(), atol=1e-5)
        np.testing.assert_allclose(added[400:].numpy(), positions[: long.shape[1] - 400].numpy(), atol=1e-5)
        model(*batch(mels[:2]))
    for i, feature in enumerate(stem):  # what forward pools: the stem feature (the std floored at 1e-5, not 1e-8)
        np.testing.assert_allclose(pooled[0][i, :384].numpy(), feature[:384, 0], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(pooled[0][i, 384:].numpy(), feature[384:, 0], atol=5e-4, rtol=1e-4)
    x, lengths = batch(mels[:2])
    cfg = load_config(REPO / "configs" / "edge_stem_finetune.yaml", ["data.root=somewhere"])
    model.train()
    optimizer = make_optimizer(model, cfg.training)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-4])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    model(x[:1], lengths[:1]).logsumexp(1).mean().backward()  # a batch of one: the running statistics
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.stem.parameters() if p.requires_grad)
    optimizer.step()
    assert build_model("encoder_stem", 5, (80, None), preset="tiny").stem.conv1[0].out_channels == 48


def test_the_trained_stem_refuses_features_it_cannot_take():
    check_model_features("encoder_stem", "base", {}, "encoder", LOGMEL)
    for ftype, params, match in (("logmel", {}, "got features.type 'logmel'"),
                                 ("encoder", {**LOGMEL, "model": "smart-turn-v3.2-stem"}, "model 'smart-turn-v3.2-stem'"),
                                 ("encoder", {**LOGMEL, "pooling": "meanstd"}, "pooling 'meanstd'")):
        with pytest.raises(UsageError, match=r"needs features.type: encoder with params \{model: whisper-logmel"):
            check_model_features("encoder_stem", "base", {}, ftype, params)
        with pytest.raises(UsageError, match=match):
            check_model_features("encoder_stem", "base", {}, ftype, params)
    with pytest.raises(UsageError, match=r"ranks \[300, 64\] of encoder_stem: ranks 1 to 240 and 1 to 384"):
        check_model_features("encoder_stem", "base", {"ranks": [300, 64]}, "encoder", LOGMEL)
    for ranks in (64, [64.0, 96]):
        with pytest.raises(UsageError, match=r"two whole numbers \[R, S\], got"):
            check_model_features("encoder_stem", "base", {"ranks": ranks}, "encoder", LOGMEL)
    with pytest.raises(UsageError, match="pad_to_window True"):
        check_model_features("encoder_stem", "base", {}, "encoder", {**LOGMEL, "pad_to_window": True})
    check_model_features("encoder_stem", "base", {}, "encoder", {**LOGMEL, "layers": [-1]})
    for mode in ("global", "speaker", "corpus"):  # statistics would move the log-mel away from what it was trained on
        with pytest.raises(UsageError, match=f"set data.normalize: none \\(got '{mode}'\\)"):
            check_model_features("encoder_stem", "base", {}, "encoder", LOGMEL, mode)
    check_model_features("encoder_stem", "base", {}, "encoder", LOGMEL, "none")
    check_model_features("fc", "base", {}, "encoder", LOGMEL, "global")
    with pytest.raises(UsageError, match="64 features a frame, but the encoder takes 80"):
        build_model("encoder_stem", 4, (64, None))
    with pytest.raises(UsageError, match=r"'whisper-logmel' is the log-mel input alone \(model encoder_stem"):
        check_model_features("encoder_top", "base", {"encoder": "whisper-logmel", "from_layer": 0}, "encoder", LOGMEL)
    from emodet.features.encoders.feature import check_params

    with pytest.raises(UsageError, match="whisper-logmel is the encoder's input, not an encoder; set pad_to_window"):
        check_params({**LOGMEL, "pooling": "meanstd", "pad_to_window": True})


def test_the_trained_stem_says_how_to_fetch_the_encoder(tmp_path, monkeypatch):
    """Without the offline encoder its weights cannot start the model: refused before any file is read."""
    monkeypatch.setenv("EMODET_HOME", str(tmp_path))
    with pytest.raises(UsageError, match="run `emodet encoders fetch` once"):
        check_model_features("encoder_stem", "base", {}, "encoder", LOGMEL)


def test_a_long_recordings_states_do_not_depend_on_its_batch():
    """A recording longer than the encoder's window is cut into windows; they once followed the batch's longest
    item, so an 8.5 s recording batched with a 12 s one got other features than alone (0.29 apart)."""
    params = {**ENCODER_DEFAULTS, "model": "smart-turn-v3.2-stem"}
    wavs = voices((8.5, 12.0, 2.0))
    together = compute_batch(wavs, SR, params)
    for wav, got in zip(wavs, together):
        np.testing.assert_allclose(got, compute_batch([wav], SR, params)[0], atol=1e-5)
