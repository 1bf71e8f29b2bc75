"""Property-based tests (hypothesis) of the audio loader, the manifest reader and the config parser:
whatever the input, the answer is a valid result or one of emodet's own errors, never a crash."""

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emodet.core.audio import load_audio
from emodet.config import load_config
from emodet.data.manifest import read_manifest, write_manifest
from emodet.core.errors import AudioError, EmodetError, UsageError

SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(n=st.integers(1, 4000), channels=st.integers(1, 3), sr=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
       subtype=st.sampled_from(SUBTYPES), target=st.sampled_from([8000, 16000, 22050]), seed=st.integers(0, 2**16))
def test_loader_returns_mono_float32_at_the_target_rate(tmp_path, n, channels, sr, subtype, target, seed):
    data = np.random.default_rng(seed).uniform(-0.9, 0.9, (n, channels)).astype(np.float32)
    path = tmp_path / f"x_{seed}_{n}.wav"
    sf.write(path, data, sr, subtype=subtype)
    wav = load_audio(path, target)
    assert wav.dtype == np.float32 and wav.ndim == 1 and np.isfinite(wav).all()
    assert abs(len(wav) - n * target / sr) <= 1.5


@FAST
@given(blob=st.binary(min_size=0, max_size=300))
def test_loader_on_arbitrary_bytes_raises_audio_error_or_loads(tmp_path, blob):
    path = tmp_path / "blob.wav"
    path.write_bytes(b"RIFF" + blob if blob[:1] == b"\x00" else blob)
    try:
        wav = load_audio(path)
    except AudioError as exc:
        assert "blob.wav" in str(exc)
    else:
        assert wav.dtype == np.float32 and np.isfinite(wav).all()


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), min_size=1,
               max_size=20).filter(lambda s: s.strip() == s and s)


@FAST
@given(rows=st.lists(st.fixed_dictionaries({"path": text, "label": text, "speaker": text, "note": text}),
                     min_size=1, max_size=8))
def test_manifest_round_trip(tmp_path, rows):
    write_manifest(tmp_path / "m.csv", rows)
    back = read_manifest(tmp_path / "m.csv")
    assert [{k: r[k] for k in ("path", "label", "speaker", "note")} for r in back] == rows


@FAST
@given(content=st.text(max_size=300))
def test_manifest_reader_on_arbitrary_text(tmp_path, content):
    (tmp_path / "any.csv").write_text(content, encoding="utf-8")
    try:
        rows = read_manifest(tmp_path / "any.csv")
    except UsageError as exc:
        assert "any.csv" in str(exc)
    else:
        assert all(r["path"] and r["label"] and r["speaker"] for r in rows)


yaml_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, width=32) |
                           st.text(max_size=8), lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
keys = st.sampled_from(["data", "features", "model", "training", "epochs", "lr", "labels", "split", "root",
                        "normalize", "params", "early_stopping", "loss", "amp", "xyz"])


@FAST
@given(cfg=st.dictionaries(keys, st.dictionaries(keys, yaml_values, max_size=3) | yaml_values, max_size=4))
def test_config_parser_answers_with_a_config_or_a_usage_error(tmp_path, cfg):
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    try:
        out = load_config(tmp_path / "c.yaml")
    except UsageError as exc:
        assert "c.yaml" in str(exc) or "training." in str(exc) or "data." in str(exc)
    else:
        assert set(out.to_dict()) == {"data", "features", "model", "training"}


@FAST
@given(override=st.text(max_size=40))
def test_set_overrides_never_crash(override):
    try:
        load_config(None, [override])
    except EmodetError:
        pass
