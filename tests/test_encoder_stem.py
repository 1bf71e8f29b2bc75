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
    from emodet.models.common import masked_mean
    from emodet.training.optim import make_optimizer

    wavs = voices()
    mels = compute_batch(wavs, SR, LOGMEL)
    assert [m.shape for m in mels] == [(80, len(w) // 160) for w in wavs]
    stem = compute_batch(wavs[:2], SR, {**ENCODER_DEFAULTS, "model": "smart-turn-v3.2-stem"})
    model = build_model("encoder_stem", 5, (80, None)).eval()
    with torch.no_grad():
        long, _ = model.frames(*batch(mels[2:]))
        assert long.shape[1] == (mels[2].shape[1] + 1) // 2
        x, lengths = batch(mels[:2])
        h, mask = model.frames(x, lengths)
        h = h.transpose(1, 2)
        mean = masked_mean(h, mask)
        std = torch.sqrt(masked_mean((h - mean[..., None]) ** 2, mask) + 1e-8)
    for i, feature in enumerate(stem):
        np.testing.assert_allclose(mean[i].numpy(), feature[:384, 0], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(std[i].numpy(), feature[384:, 0], atol=1e-4, rtol=1e-4)
    cfg = load_config(REPO / "configs" / "edge_stem_finetune.yaml", ["data.root=somewhere"])
    model.train()
    optimizer = make_optimizer(model, cfg.training)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-4])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    before = model.stem.conv1[0].weight.detach().clone()
    model(x[:1], lengths[:1]).logsumexp(1).mean().backward()  # a batch of one: the running statistics
    optimizer.step()
    assert not torch.equal(model.stem.conv1[0].weight, before)
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
    with pytest.raises(UsageError, match="ranks 1 to 240 and 1 to 384"):
        check_model_features("encoder_stem", "base", {"ranks": [300, 64]}, "encoder", LOGMEL)
    with pytest.raises(UsageError, match=r"two ranks \[R, S\], got 64"):
        check_model_features("encoder_stem", "base", {"ranks": 64}, "encoder", LOGMEL)
    with pytest.raises(UsageError, match="64 features a frame, but the encoder takes 80"):
        build_model("encoder_stem", 4, (64, None))
