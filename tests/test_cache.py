import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emodet.data.cache import FeatureCache, in_shard, list_audio_files, parse_shard
from emodet.core.errors import AudioError, UsageError

from conftest import REPO, cli


@pytest.fixture
def corpus(tmp_path, synth_corpus):
    root = tmp_path / "corpus"
    shutil.copytree(synth_corpus, root)
    return root


def _entries(cache: FeatureCache) -> list[Path]:
    return sorted(cache.dir.glob("*/*.npy"))


def assert_cache_complete_and_valid(cache: FeatureCache, root: Path, files=None):
    files = files if files is not None else list_audio_files(root)
    for rel in files:
        got = cache.get(root, rel)
        assert got is not None, f"no entry for {rel}"
        np.testing.assert_allclose(got, cache.compute(root / rel), atol=1e-4)
    assert len(_entries(cache)) == len(files)
    assert not list(cache.dir.rglob("*.tmp")), "temporary files left behind"


def test_build_then_rerun_skips_everything(corpus, tmp_path):
    cache = FeatureCache(tmp_path / "c", "mfcc", {"n_mfcc": 13})
    first = cache.build(corpus, progress=False)
    assert (first.total, first.computed, first.cached, first.failed) == (45, 45, 0, [])
    assert first.audio_seconds > 30
    assert_cache_complete_and_valid(cache, corpus)
    second = cache.build(corpus, progress=False)
    assert (second.computed, second.cached) == (0, 45)
    report = json.loads((cache.dir / "report.json").read_text())
    assert report["cached"] == 45 and report["feature"] == "mfcc" and report["params"]["n_mfcc"] == 13
    config = json.loads((cache.dir / "config.json").read_text())
    assert config["sample_rate"] == 16000 and config["params"]["n_mfcc"] == 13


def test_changed_parameter_recomputes_all(corpus, tmp_path):
    FeatureCache(tmp_path / "c", "logmel").build(corpus, progress=False)
    other = FeatureCache(tmp_path / "c", "logmel", {"n_mels": 40})
    report = other.build(corpus, progress=False)
    assert report.computed == 45 and report.cached == 0
    assert other.load(corpus, list_audio_files(corpus)[0]).shape[0] == 40
    # the sample rate is part of the key too
    assert FeatureCache(tmp_path / "c", "logmel", sr=8000).build(corpus, progress=False).computed == 45


def test_touched_file_recomputes_only_it(corpus, tmp_path):
    cache = FeatureCache(tmp_path / "c", "logmel")
    cache.build(corpus, progress=False)
    files = list_audio_files(corpus)
    target = corpus / files[7]
    wav, sr = sf.read(target)
    sf.write(target, wav[: len(wav) // 2], sr)  # new content, size and mtime
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    report = cache.build(corpus, progress=False)
    assert (report.computed, report.cached) == (1, 44)
    assert_cache_complete_and_valid(cache, corpus)  # the stale entry is gone: one entry a file
    # touching only the modification time also recomputes it
    os.utime(corpus / files[3], ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert cache.build(corpus, progress=False).computed == 1


def test_bad_files_are_skipped_and_reported(corpus, tmp_path):
    (corpus / "neutral" / "empty.wav").write_bytes(b"")
    (corpus / "neutral" / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    cache = FeatureCache(tmp_path / "c", "mfcc")
    report = cache.build(corpus, progress=False)
    assert (report.total, report.computed, len(report.failed)) == (47, 45, 2)
    failed = {item["path"]: item["error"] for item in json.loads((cache.dir / "report.json").read_text())["failed"]}
    assert set(failed) == {"neutral/corrupt.wav", "neutral/empty.wav"}
    assert "zero-byte file" in failed["neutral/empty.wav"] and "cannot decode" in failed["neutral/corrupt.wav"]
    good = [f for f in list_audio_files(corpus) if f not in failed]
    assert_cache_complete_and_valid(cache, corpus, good)
    with pytest.raises(AudioError, match="corrupt.wav: cannot decode"):
        FeatureCache(tmp_path / "c2", "mfcc").build(corpus, on_error="raise", progress=False)


def test_cli_summary_counts_cached_entries(corpus, tmp_path):
    """(Bad files through the CLI: tests/test_bad_inputs.py's catalogue.)"""
    ok = cli("features", "--data-root", corpus, "--feature", "mfcc", "--cache-dir", tmp_path / "c", "--param", "n_mfcc=20")
    assert ok.returncode == 0, ok.stderr
    assert "45 files, 45 computed, 0 already cached, 0 failed" in ok.stdout
    again = cli("features", "--data-root", corpus, "--feature", "mfcc", "--cache-dir", tmp_path / "c", "--param", "n_mfcc=20")
    assert again.returncode == 0 and "45 files, 0 computed, 45 already cached, 0 failed" in again.stdout
    usage = cli("features", "--data-root", corpus, "--cache-dir", tmp_path / "c", "--param", "n_mfcc")
    assert usage.returncode == 2 and "expected key=value" in usage.stderr


def test_cli_builds_speed_perturbed_caches_training_reads(corpus, tmp_path):
    out = cli("features", "--data-root", corpus, "--feature", "mfcc", "--cache-dir", tmp_path / "c", "--speed", "0.9",
                  "--speed", "1.1", "--workers", "2", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("45 files, 45 computed") == 3 and "(speed 0.9)" in out.stdout and "(speed 1.1)" in out.stdout
    plain = FeatureCache(tmp_path / "c", "mfcc")
    for factor in (0.9, 1.1):
        cache = FeatureCache(tmp_path / "c", "mfcc", speed=factor)  # the folder prepare_data reads for the factor
        assert cache.dir != plain.dir
        assert_cache_complete_and_valid(cache, corpus)
        rel = list_audio_files(corpus)[0]
        assert cache.get(corpus, rel).shape[1] != plain.get(corpus, rel).shape[1]  # tempo changed
    bad = cli("features", "--data-root", corpus, "--cache-dir", tmp_path / "c", "--speed", "1")
    assert bad.returncode == 2 and "--speed: each factor must be a number in [0.5, 2] other than 1" in bad.stderr
    with pytest.raises(UsageError, match=r"speed: each factor must be a number in \[0.5, 2\]"):
        FeatureCache(tmp_path / "c", "mfcc", speed=3)


def test_original_script_entry_point(corpus, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "audio_features.py"), "--data-root", str(corpus), "--feature",
                          "mfcc", "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "45 computed" in out.stdout


def test_workers_and_plugin_in_workers(corpus, tmp_path):
    plugin = tmp_path / "energy_plugin.py"
    plugin.write_text(
        "import numpy as np\nfrom emodet import register_feature\n\n"
        "@register_feature('frame_energy')\n"
        "def frame_energy(wav, sr, params):\n"
        "    hop = int(params.get('hop', 160))\n"
        "    n = len(wav) // hop\n"
        "    return (wav[: n * hop].reshape(n, hop) ** 2).mean(1, keepdims=True).T\n"
    )
    res = cli("features", "--data-root", corpus, "--feature", "frame_energy", "--param", "hop=320",
                  "--cache-dir", tmp_path / "c", "--workers", "2", "--plugin", plugin, "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "45 computed" in res.stdout
    from emodet.features import load_plugin

    load_plugin(str(plugin))
    cache = FeatureCache(tmp_path / "c", "frame_energy", {"hop": 320})
    assert_cache_complete_and_valid(cache, corpus)


def test_two_shards_equal_one_build(corpus, tmp_path):
    single = FeatureCache(tmp_path / "one", "logmel")
    single.build(corpus, progress=False)
    sharded = FeatureCache(tmp_path / "two", "logmel")
    reports = [sharded.build(corpus, shard=f"{i}/2", progress=False) for i in range(2)]
    assert sum(r.total for r in reports) == 45 and all(r.total > 5 for r in reports)
    assert [p.name for p in _entries(single)] == [p.name for p in _entries(sharded)]
    for a, b in zip(_entries(single), _entries(sharded)):
        np.testing.assert_array_equal(np.load(a), np.load(b))
    files = list_audio_files(corpus)
    assert sorted(f for i in range(3) for f in files if in_shard(f, (i, 3))) == files
    for bad in ("2/2", "a/b", "1"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


SLOW_PLUGIN = (
    "import time\nfrom emodet import register_feature\nfrom emodet.features import compute_feature\n\n"
    "@register_feature('slow_mfcc')\n"
    "def slow_mfcc(wav, sr, params):\n"
    "    time.sleep(0.03)\n"
    "    return compute_feature('mfcc', wav, sr, {'n_mfcc': 13})\n"
)


@pytest.fixture(scope="module")
def slow_plugin(tmp_path_factory):
    """A plugin feature that takes 30 ms a file, so a build can be killed in its middle."""
    from emodet.features import load_plugin

    plugin = tmp_path_factory.mktemp("plugin") / "slow_plugin.py"
    plugin.write_text(SLOW_PLUGIN)
    load_plugin(str(plugin))
    return plugin


def _start_build(corpus, cache_dir, plugin):
    return subprocess.Popen([sys.executable, "-m", "emodet", "features", "--data-root", str(corpus), "--feature",
                             "slow_mfcc", "--cache-dir", str(cache_dir), "--plugin", str(plugin), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kill_after", [pytest.param(1, marks=pytest.mark.slow), 12,
                                        pytest.param(30, marks=pytest.mark.slow)])
def test_build_killed_with_sigkill_resumes_to_valid_cache(corpus, tmp_path, kill_after, slow_plugin):
    plugin = slow_plugin
    cache = FeatureCache(tmp_path / "c", "slow_mfcc")
    proc = _start_build(corpus, tmp_path / "c", plugin)
    deadline = time.time() + 60
    while len(_entries(cache)) < kill_after and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_entries(cache))
    assert kill_after <= done < 45, "the build was not killed in the middle"
    for entry in _entries(cache):  # every entry present is complete
        assert np.load(entry).shape[0] == 13
    rerun = subprocess.run([sys.executable, "-m", "emodet", "features", "--data-root", str(corpus), "--feature",
                            "slow_mfcc", "--cache-dir", str(tmp_path / "c"), "--plugin", str(plugin)],
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{45 - done} computed, {done} already cached" in rerun.stdout
    assert_cache_complete_and_valid(cache, corpus)


def test_two_builds_at_once_do_not_corrupt(corpus, tmp_path, slow_plugin):
    procs = [_start_build(corpus, tmp_path / "c", slow_plugin) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert_cache_complete_and_valid(FeatureCache(tmp_path / "c", "slow_mfcc"), corpus)


def test_stale_temp_files_of_dead_writers_are_removed(corpus, tmp_path):
    cache = FeatureCache(tmp_path / "c", "logmel")
    cache.build(corpus, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    bucket = _entries(cache)[0].parent
    (bucket / f".x.npy.{dead.pid}.abcd1234.tmp").write_bytes(b"half")
    live = bucket / f".y.npy.{os.getpid()}.abcd1234.tmp"
    live.write_bytes(b"mine")
    cache.build(corpus, progress=False)
    assert not (bucket / f".x.npy.{dead.pid}.abcd1234.tmp").exists()
    assert live.exists()  # a live writer's file is left alone
    live.unlink()


def test_load_computes_missing_entry_and_reads_entries_back(corpus, tmp_path):
    cache = FeatureCache(tmp_path / "c", "logmel")
    files = list_audio_files(corpus)
    feats = cache.load(corpus, files[0])
    assert feats.shape[0] == 64 and len(_entries(cache)) == 1
    cache.build(corpus, progress=False)
    loaded = [cache.get(corpus, f) for f in files]  # how fast: bench/features.py (warm read), not a test
    assert all(x is not None for x in loaded)
    np.testing.assert_array_equal(loaded[0], feats)
    mm = FeatureCache(tmp_path / "c", "logmel", mmap=True).get(corpus, files[1])
    np.testing.assert_array_equal(mm, loaded[1])


def test_native_rate_features_see_the_files_own_rate(tmp_path):
    """openSMILE-style features (native_rate=True) get each file at its own rate; others at the pipeline's."""
    from emodet.features import get_feature_spec, register_feature

    @register_feature("rate_probe_native", native_rate=True, override=True)
    def _native(wav, sr, params):
        return np.array([[sr], [len(wav)]], np.float32)

    @register_feature("rate_probe_resampled", override=True)
    def _resampled(wav, sr, params):
        return np.array([[sr], [len(wav)]], np.float32)

    root = tmp_path / "rates"
    root.mkdir()
    for rate in (8000, 22050, 48000):
        sf.write(root / f"r{rate}.wav", np.zeros(rate // 2, np.float32) + 0.01, rate)
    native = FeatureCache(tmp_path / "cache", "rate_probe_native", sr=16000)
    resampled = FeatureCache(tmp_path / "cache", "rate_probe_resampled", sr=16000)
    for rate in (8000, 22050, 48000):
        assert native.load(root, f"r{rate}.wav")[:, 0].tolist() == [rate, rate // 2]
        assert resampled.load(root, f"r{rate}.wav")[:, 0].tolist() == [16000, 8000]
    assert native.config["native_rate"] is True and "native_rate" not in resampled.config
    fresh = FeatureCache(tmp_path / "cache2", "rate_probe_native", sr=16000).build(root)
    assert fresh.audio_seconds == pytest.approx(1.5)
    assert all(get_feature_spec(f).native_rate for f in ("compare", "egemaps", "emobase"))
    assert not get_feature_spec("logmel").native_rate
