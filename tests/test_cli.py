from emodet import __version__

from conftest import REPO, run_cli


def test_version_and_help():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"emodet {__version__}"
    out = run_cli("--help")
    assert out.returncode == 0
    for verb in ("demo", "data", "features"):
        assert verb in out.stdout
    assert run_cli().returncode == 2
    bad = run_cli("nonsense")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_features_list():
    out = run_cli("features", "--list")
    assert out.returncode == 0
    assert "logmel" in out.stdout and "alias: mel" in out.stdout and "egemaps" in out.stdout
    assert "parameters: trim_db=null" in out.stdout and "n_mels=64" in out.stdout  # each feature's defaults


def test_data_synth(tmp_path):
    out = run_cli("data", "synth", "--out", tmp_path / "s", "--per-class", "1", "--speakers", "2", "--seed", "4")
    assert out.returncode == 0, out.stderr
    assert "10 files, 2 speakers, 5 labels" in out.stdout
    assert len(list((tmp_path / "s").rglob("*.wav"))) == 10


def test_demo_small_and_rerun_reuses(tmp_path):
    args = ("demo", "--out", tmp_path / "d", "--per-class", "2", "--speakers", "3", "--epochs", "2")
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    assert "30 files" in out.stdout and "angry 6, fearful 6, happy 6, neutral 6, sad 6" in out.stdout
    table = out.stdout.split("held-out speakers", 1)[1]
    assert "fc_mfcc" in table and "crnn_tiny_logmel" in table
    for run in ("fc_mfcc", "crnn_tiny_logmel"):
        assert (tmp_path / "d" / "runs" / run / "metrics.json").is_file()
    assert (tmp_path / "d" / "crnn_tiny_logmel.onnx").is_file() and "[4/4] exported" in out.stdout
    assert "ms a clip with onnxruntime" in out.stdout
    again = run_cli(*args)
    assert again.returncode == 0 and "already in" in again.stdout and "already trained" in again.stdout
    few = run_cli("demo", "--out", tmp_path / "e", "--speakers", "2")
    assert few.returncode == 2 and "at least 3 speakers" in few.stderr


def test_readme_quick_start_is_two_commands():
    text = (REPO / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "emodet demo" in commands[0] and "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and commands[1].strip() in ci
