import numpy as np
import pytest
import torch

from emodet.core.errors import UnknownNameError, UsageError
from emodet.models import _MODEL_REGISTRY, build_model, count_parameters, list_models, register_model

FAMILIES = ["fc", "cnn", "resnet", "lstm", "crnn", "dscnn"]


def test_registry_lists_families_and_errors():
    assert set(FAMILIES) <= set(list_models()) and set(FAMILIES) <= set(_MODEL_REGISTRY)
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnt' \(did you mean 'resnet'\?\); known models: cnn, crnn, dscnn, encoder_stem, encoder_top, fc"):
        build_model("resnt", 4, (40, 100))
    with pytest.raises(UsageError, match=r"model 'lstm' has no parameter 'hiden' \(did you mean 'hidden'\?\)"):
        build_model("lstm", 4, (40, 100), hiden=3)
    with pytest.raises(UsageError, match="no preset 'huge'; presets: base, tiny"):
        build_model("fc", 4, (40, 100), preset="huge")
    with pytest.raises(UsageError, match="already registered"):
        register_model("fc")(torch.nn.Linear)
    with pytest.raises(UsageError, match="at least 2 classes"):
        build_model("fc", 1, (40, 100))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("preset", ["base", "tiny"])
def test_forward_backward_shapes(name, preset):
    torch.manual_seed(0)
    model = build_model(name, 7, (40, 120), preset=preset)
    x = torch.randn(4, 40, 120)
    lengths = torch.tensor([120, 100, 33, 9])
    logits = model(x, lengths)
    assert logits.shape == (4, 7) and torch.isfinite(logits).all()
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert model(x).shape == (4, 7)  # lengths optional
    if preset == "tiny":
        assert count_parameters(model) * 4 < 1_000_000, "tiny preset must stay under 1 MB of float32 weights"


@pytest.mark.parametrize("name,extra", [(name, {}) for name in FAMILIES] + [("dscnn", {"stem_stride": 4}),
                                                                           ("dscnn", {"centre_bands": True})])
def test_padding_does_not_change_predictions(name, extra):
    """An item gives the same logits alone as zero-padded in a batch (evaluation is batch-independent)."""
    torch.manual_seed(1)
    model = build_model(name, 5, (32, 200), preset="tiny", **extra).eval()
    lengths = torch.tensor([200, 77, 12])
    x = torch.randn(3, 32, 200) * (torch.arange(200)[None, None, :] < lengths[:, None, None])
    batched = model(x, lengths)
    alone = torch.cat([model(x[i:i + 1, :, : lengths[i]], lengths[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_centred_bands_take_a_gain_and_a_channel_colouring_away():
    """dscnn's centre_bands: an offset per band (on log-mel, a gain or a fixed microphone response) changes
    nothing, padding included; without it the same offset changes the answer."""
    torch.manual_seed(3)
    centred = build_model("dscnn", 4, (32, 120), preset="tiny", centre_bands=True).eval()
    plain = build_model("dscnn", 4, (32, 120), preset="tiny").eval()
    plain.load_state_dict(centred.state_dict())
    lengths = torch.tensor([120, 50])
    mask = (torch.arange(120)[None, None, :] < lengths[:, None, None]).float()
    x = torch.randn(2, 32, 120) * mask
    offset = torch.linspace(-30, 10, 32)[None, :, None] * mask  # on valid frames only, as padding stays 0
    torch.testing.assert_close(centred(x + offset, lengths), centred(x, lengths), atol=1e-4, rtol=1e-4)
    # (an untrained network's logits are small: the change is measured against their size)
    assert (plain(x + offset, lengths) - plain(x, lengths)).abs().max() > 0.02 * plain(x, lengths).abs().max()


def test_fc_on_functionals():
    model = build_model("fc", 3, (88, 1), pooling="mean", hidden=(16,))
    assert model(torch.randn(5, 88, 1)).shape == (5, 3)


SLOW = pytest.mark.slow


@pytest.mark.parametrize("name,extra", [("fc", {}), ("cnn", {}), pytest.param("dscnn", {}, marks=SLOW),  # dscnn: also
                                        # tests/test_export.py's edge student, front end included
                                        pytest.param("dscnn", {"centre_bands": True}, marks=SLOW),
                                        pytest.param("cnn", {"pooling": "meanstd"}, marks=SLOW),
                                        pytest.param("resnet", {}, marks=SLOW), pytest.param("lstm", {}, marks=SLOW),
                                        pytest.param("crnn", {}, marks=SLOW)])
def test_export_parity_in_onnxruntime(name, extra, tmp_path):
    pytest.importorskip("onnxruntime")
    from emodet.export.graph import export_classifier, onnx_logits

    torch.manual_seed(2)
    model = build_model(name, 6, (40, 100), preset="tiny", **extra).eval()
    path = export_classifier(model, tmp_path / "m.onnx", 40)
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 40, "frames"]  # any batch, any length
    for t in (57, 300):
        x = torch.randn(3, 40, t)
        lengths = torch.tensor([t, t // 2, 9])
        ours = onnx_logits(path, x.numpy(), lengths.numpy())
        np.testing.assert_allclose(ours, model(x, lengths).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_layer_sum_head_weighs_hidden_states():
    """The SUPERB-style head: softmax weights over the states (summing to 1), pooled or frame-level input;
    with all weight on one state it sees that state alone."""
    torch.manual_seed(0)
    pooled = build_model("layer_sum", 4, (5 * 12, 1), states=5, preset="tiny").eval()
    x = torch.randn(3, 60, 1)
    assert pooled(x).shape == (3, 4) and float(pooled.layer_weights().sum()) == pytest.approx(1.0)
    with torch.no_grad():
        pooled.layer_logits.copy_(torch.tensor([-1e4, -1e4, 1e4, -1e4, -1e4]))
    changed = x.clone()
    changed[:, :24] += 5.0  # states 0 and 1 only
    torch.testing.assert_close(pooled(x), pooled(changed))
    frames = build_model("layer_sum", 4, (5 * 8, 30), states=5, preset="tiny").eval()
    y, lengths = torch.randn(2, 40, 30), torch.tensor([30, 12])
    alone = frames(y[1:, :, :12], lengths[1:])
    torch.testing.assert_close(frames(y, lengths)[1:], alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(UsageError, match="do not split into 5 hidden states"):
        build_model("layer_sum", 4, (42, 1), states=5)
