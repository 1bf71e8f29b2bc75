import sys

import numpy as np
import pytest
import torch

from emodet.core.errors import UnknownNameError, UsageError
from emodet.features import (LogMel, build_logmel, build_mfcc, compute_feature, get_feature, get_feature_spec,
                             list_features, load_plugin, register_feature, resolve_params)
from emodet.features import registry as reg
from emodet.core.filters import dct_matrix, mel_filterbank

from conftest import speechlike

librosa = pytest.importorskip("librosa")

PARAM_SETS = [
    (16000, {}),
    (16000, {"n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 40, "fmin": 50.0, "fmax": 7000.0}),
    (22050, {"n_mels": 128}),
    (8000, {"n_fft": 256, "win_length": 200, "hop_length": 80, "n_mels": 32, "top_db": None}),
]


def _librosa_logmel(y, sr, p):
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=p["n_fft"], hop_length=p["hop_length"],
                                       win_length=p["win_length"], n_mels=p["n_mels"], fmin=p["fmin"],
                                       fmax=p["fmax"], center=True, pad_mode="constant", power=2.0)
    return librosa.power_to_db(S, ref=np.max if p.get("ref") == "max" else 1.0, amin=1e-10, top_db=p["top_db"])


@pytest.mark.parametrize("sr,params", PARAM_SETS)
def test_logmel_equals_librosa(sr, params):
    from emodet.features.spectral import resolve_frame_params

    y = speechlike(sr, 1.3)
    p = resolve_frame_params(sr, resolve_params("logmel", params))
    ours = compute_feature("logmel", y, sr, params)
    ref = _librosa_logmel(y, sr, p)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-3


@pytest.mark.parametrize("sr,params", PARAM_SETS)
def test_mfcc_equals_librosa(sr, params):
    from emodet.features.spectral import resolve_frame_params

    y = speechlike(sr, 1.3, seed=3)
    params = {**params, "n_mfcc": 13}
    p = resolve_frame_params(sr, resolve_params("mfcc", params))
    ours = compute_feature("mfcc", y, sr, params)
    ref = librosa.feature.mfcc(S=_librosa_logmel(y, sr, p), n_mfcc=13)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-2


def test_ref_max_is_relative_to_the_loudest_bin_and_takes_a_gain_away(tmp_path):
    """``ref: max`` (librosa's ``power_to_db(ref=np.max)``): the loudest bin is 0 dB, so a recording's gain
    (a quiet microphone, -30 dB) changes nothing, in torch, in a padded batch and in the torch-free front end;
    the cache of the default (``ref`` unset) keeps its key; other values are refused naming the valid ones."""
    from emodet.data.cache import FeatureCache
    from emodet.features.spectral import resolve_frame_params
    from emodet.runtime.frontend import NumpyFrontEnd

    y = speechlike(16000, 1.3)
    for name in ("logmel", "mfcc"):
        p = resolve_frame_params(16000, resolve_params(name, {"ref": "max"}))
        ours = compute_feature(name, y, 16000, p)
        want = _librosa_logmel(y, 16000, p)
        if name == "logmel":
            assert ours.max() == 0.0 and np.abs(ours - want).max() <= 1e-3
        else:
            assert np.abs(ours - librosa.feature.mfcc(S=want, n_mfcc=40)).max() <= 1e-2
        for gain_db in (-30.0, -60.0, 12.0):
            quiet = (y * 10 ** (gain_db / 20)).astype(np.float32)
            np.testing.assert_allclose(compute_feature(name, quiet, 16000, p), ours, atol=2e-3)
            # without it, the level moves every frame (the first MFCC coefficient carries it)
            assert np.abs(compute_feature(name, quiet, 16000, {}) - compute_feature(name, y, 16000, {})).max() > 5
        np.testing.assert_allclose(NumpyFrontEnd(name, p, 16000)(y), ours, atol=1e-3)
    # in a padded batch each item's peak is over its own frames (given): a short item whose loudest sound is its
    # last few milliseconds gets what it gets alone; the frames past its end (padding) would have moved it
    tone = np.sin(2 * np.pi * 1000 * np.arange(100) / 16000)  # ends 1 sample before the next frame's centre
    short = np.concatenate([y[:8059] * 0.1, tone]).astype(np.float32)
    batch = torch.zeros(2, len(y))
    batch[0], batch[1, : len(short)] = torch.from_numpy(y), torch.from_numpy(short)
    frames = torch.tensor([len(y) // 160 + 1, len(short) // 160 + 1])
    for ref in (None, "max"):
        module = build_logmel(16000, resolve_params("logmel", {"ref": ref}))
        alone = compute_feature("logmel", short, 16000, {"ref": ref})
        np.testing.assert_allclose(module(batch, frames)[1, :, : alone.shape[1]].numpy(), alone, atol=2e-3)
        if ref == "max":
            assert np.abs(module(batch)[1, :, : alone.shape[1]].numpy() - alone).max() > 1  # without: moved
    # half precision (AMP): amin is 0 in float16, so the dB step runs in float32; silence gives finite features
    from emodet.features.spectral import AmplitudeToDB
    for ref in (None, "max"):
        silent = AmplitudeToDB(80.0, ref=ref)(torch.zeros(1, 4, 6, dtype=torch.float16))
        assert silent.dtype == torch.float32 and torch.isfinite(silent).all()
    default = FeatureCache(tmp_path, "logmel", {})
    assert "ref" not in default.config["params"]  # caches made before the parameter existed stay valid
    assert FeatureCache(tmp_path, "logmel", {"ref": "max"}).dir != default.dir
    # a bad value is refused when the parameters are resolved, before any file is read
    for bad, what in (({"ref": "min"}, "'ref' must be null .* or 'max'"), ({"top_db": -3}, "'top_db' must be"),
                      ({"n_mels": None}, "'n_mels' must be a positive integer"), ({"fmax": float("inf")}, "fmax"),
                      ({"top_db": 0}, "'top_db' must be a positive"), ({"fmax": 9000}, r"sr/2 \(8000 Hz\)")):
        with pytest.raises(UsageError, match=what):
            FeatureCache(tmp_path, "logmel", bad)


def test_defaults_are_25ms_window_10ms_hop():
    from emodet.features.spectral import resolve_frame_params

    p = resolve_frame_params(16000, resolve_params("logmel", {}))
    assert (p["win_length"], p["hop_length"], p["n_fft"], p["n_mels"]) == (400, 160, 512, 64)
    p = resolve_frame_params(48000, resolve_params("mfcc", {}))
    assert (p["win_length"], p["hop_length"], p["n_fft"], p["n_mfcc"]) == (1200, 480, 2048, 40)
    assert compute_feature("logmel", np.zeros(16000, np.float32) + 0.1, 16000).shape == (64, 101)


def test_mel_alias_and_short_input():
    y = speechlike(16000, 0.05)[:37]
    assert compute_feature("mel", y, 16000).shape == (64, 1)
    np.testing.assert_array_equal(compute_feature("mel", speechlike(), 16000), compute_feature("logmel", speechlike(), 16000))


def test_modules_are_batched_and_match_single_items():
    batch = torch.from_numpy(np.stack([speechlike(seed=s) for s in range(3)]))
    for factory, name in ((build_logmel, "logmel"), (build_mfcc, "mfcc")):
        module = factory(16000, resolve_params(name, {}))
        out = module(batch)
        assert out.shape[0] == 3 and out.dtype == torch.float32
        for i in range(3):
            np.testing.assert_allclose(out[i].numpy(), compute_feature(name, batch[i].numpy(), 16000), atol=1e-4)
        # float64 path too (buffers follow the input's dtype)
        assert module(batch.double()).dtype == torch.float64


def test_filterbank_and_dct_match_references():
    for sr, n_fft, n_mels, fmin, fmax in ((16000, 512, 64, 0.0, None), (22050, 2048, 128, 30.0, 9000.0)):
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, fmin, fmax), ref, atol=1e-6)
    from scipy.fft import dct

    x = np.random.default_rng(0).standard_normal((32, 5))
    np.testing.assert_allclose(dct_matrix(13, 32) @ x, dct(x, type=2, norm="ortho", axis=0)[:13], atol=1e-5)
    assert LogMel().mel.filters.shape == (64, 257)


def test_chroma_shape():
    out = compute_feature("chroma", speechlike(), 16000)
    assert out.shape[0] == 12 and out.shape[1] == 151
    assert out.min() >= 0 and out.max() <= 1.0 + 1e-6
    with pytest.raises(UsageError, match="feature parameter 'n_chroma' must be a positive integer, got 0"):
        resolve_params("chroma", {"n_chroma": 0})  # refused when resolved, before any audio


def test_opensmile_functionals_or_clear_error():
    try:
        import opensmile  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match=r"pip install 'emodet\[opensmile\]'"):
            compute_feature("egemaps", speechlike(), 16000)
        return
    for name, n in (("egemaps", 88), ("emobase", 988)):
        out = compute_feature(name, speechlike(), 16000)
        assert out.shape == (n, 1) and np.isfinite(out).all(), name


def test_functionals_trim_leading_and_trailing_silence():
    pytest.importorskip("opensmile")
    from emodet.core.audio import trim_silence

    speech = speechlike()
    padded = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(8000, np.float32)])
    trimmed = compute_feature("egemaps", padded, 16000, {"trim_db": 30})
    assert np.array_equal(trimmed, compute_feature("egemaps", trim_silence(padded, 16000, 30)[0], 16000))
    assert not np.allclose(trimmed, compute_feature("egemaps", padded, 16000))  # the second of silence counted
    for bad in (-3, 0, "30", True):
        with pytest.raises(UsageError, match="feature parameter 'trim_db' must be a positive number"):
            resolve_params("compare", {"trim_db": bad})  # refused before any file is read
    assert resolve_params("compare", {}) == {"trim_db": None}


def test_missing_opensmile_names_the_extra(monkeypatch):
    from emodet.core import smile

    smile._smile.cache_clear()
    monkeypatch.setitem(sys.modules, "opensmile", None)  # makes `import opensmile` raise ImportError
    with pytest.raises(UsageError, match=r"feature 'compare' needs openSMILE.*emodet\[opensmile\]"):
        compute_feature("compare", speechlike(), 16000)
    smile._smile.cache_clear()


def test_unknown_feature_lists_known_ones():
    with pytest.raises(UnknownNameError) as err:
        get_feature("mfccs")
    msg = str(err.value)
    assert "unknown feature 'mfccs'" in msg and "did you mean 'mfcc'" in msg
    for name in ("logmel", "mel", "mfcc", "chroma"):
        assert name in msg


def test_unknown_and_bad_parameters():
    with pytest.raises(UsageError, match=r"no parameter 'n_mel' \(did you mean 'n_mels'\?\); valid parameters: fmax"):
        compute_feature("logmel", speechlike(), 16000, {"n_mel": 40})
    with pytest.raises(UsageError, match="'n_mels' must be a positive integer, got 0"):
        compute_feature("logmel", speechlike(), 16000, {"n_mels": 0})
    with pytest.raises(UsageError, match=r"'win_length' \(1024\) must not exceed 'n_fft' \(512\)"):
        compute_feature("logmel", speechlike(), 16000, {"n_fft": 512, "win_length": 1024})
    with pytest.raises(UsageError, match="fmin < fmax <= sr/2"):
        compute_feature("mfcc", speechlike(), 16000, {"fmax": 9000})
    with pytest.raises(UsageError, match=r"'n_mfcc' \(80\) must not exceed 'n_mels' \(64\)"):
        compute_feature("mfcc", speechlike(), 16000, {"n_mfcc": 80})


@pytest.fixture
def clean_registry():
    saved = dict(reg._FEATURE_REGISTRY), dict(reg._ALIASES)
    yield
    reg._FEATURE_REGISTRY.clear(); reg._FEATURE_REGISTRY.update(saved[0])
    reg._ALIASES.clear(); reg._ALIASES.update(saved[1])


def test_register_custom_feature_and_duplicates(clean_registry):
    @register_feature("rms_test")
    def rms(wav, sr, params):
        frame = params.get("frame", 160)
        n = len(wav) // frame
        return np.sqrt((wav[: n * frame].reshape(n, frame) ** 2).mean(1))[None, :]

    assert "rms_test" in list_features()
    out = compute_feature("rms_test", np.ones(1600, np.float32), 16000, {"frame": 400})
    np.testing.assert_allclose(out, np.ones((1, 4)))
    with pytest.raises(UsageError, match="'rms_test' is already registered.*override=True"):
        register_feature("rms_test")(rms)
    with pytest.raises(UsageError, match="'mel' is already registered"):
        register_feature("mel")(rms)
    register_feature("rms_test", override=True)(lambda w, s, p: np.zeros((2, 3)))
    assert compute_feature("rms_test", np.ones(10, np.float32), 16000).shape == (2, 3)
    assert not get_feature_spec("rms_test").exportable and get_feature_spec("mfcc").exportable


def test_bad_feature_output_is_reported(clean_registry):
    register_feature("bad_list")(lambda w, s, p: [1, 2, 3])
    register_feature("bad_nan")(lambda w, s, p: np.full((2, 2), np.nan))
    register_feature("bad_3d")(lambda w, s, p: np.zeros((2, 2, 2)))
    with pytest.raises(UsageError, match="'bad_list' returned list; it must return a numpy array"):
        compute_feature("bad_list", np.ones(10, np.float32), 16000)
    with pytest.raises(UsageError, match="'bad_nan' returned NaN"):
        compute_feature("bad_nan", np.ones(10, np.float32), 16000)
    with pytest.raises(UsageError, match=r"'bad_3d' returned shape \(2, 2, 2\)"):
        compute_feature("bad_3d", np.ones(10, np.float32), 16000)


def test_plugin_from_file(tmp_path, clean_registry):
    plugin = tmp_path / "my_feats.py"
    plugin.write_text(
        "import numpy as np\nfrom emodet import register_feature\n\n"
        "@register_feature('zcr_plugin_test')\n"
        "def zcr(wav, sr, params):\n"
        "    return np.abs(np.diff(np.sign(wav))).reshape(1, -1)[:, ::160] / 2\n"
    )
    load_plugin(str(plugin))
    assert compute_feature("zcr_plugin_test", np.array([1, -1, 1, -1] * 100, np.float32), 16000).shape == (1, 3)
    with pytest.raises(UsageError, match="no such module or file"):
        load_plugin("surely_not_a_module_xyz")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UsageError, match="broken.py: importing it failed: RuntimeError: boom"):
        load_plugin(str(broken))


@pytest.mark.parametrize("n_fft,hop,win,center,power", [(512, 160, 400, True, 2.0), (400, 160, 400, True, 2.0),
                                                      (256, 100, 200, False, 1.0), (1024, 512, 1024, True, 2.0),
                                                      (97, 40, 97, True, 2.0)])
def test_matmul_spectrogram_equals_stft(n_fft, hop, win, center, power):
    from emodet.features.spectral import Spectrogram

    x = torch.from_numpy(np.stack([speechlike(seed=s) for s in range(2)]))
    x = x[:, :16000 + 37]  # a length that is no multiple of the hop
    a = Spectrogram(n_fft, hop, win, power, center)(x)
    b = Spectrogram(n_fft, hop, win, power, center, method="matmul")(x)
    assert a.shape == b.shape
    assert ((a - b).abs().max() / a.max()) < 1e-5


def test_graph_spectrogram_swap_keeps_features():
    from emodet.features.spectral import Spectrogram, use_graph_spectrogram

    x = torch.from_numpy(np.stack([speechlike(seed=s) for s in range(2)]))
    for factory, name in ((build_logmel, "logmel"), (build_mfcc, "mfcc")):
        ref = factory(16000, resolve_params(name, {}))(x)
        swapped = use_graph_spectrogram(factory(16000, resolve_params(name, {})))
        assert any(isinstance(m, Spectrogram) and m.method == "matmul" for m in swapped.modules())
        assert (swapped(x) - ref).abs().max() < 2e-3
