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


def test_data_synth(tmp_path):
    out = run_cli("data", "synth", "--out", tmp_path / "s", "--per-class", "1", "--speakers", "2", "--seed", "4")
    assert out.returncode == 0, out.stderr
    assert "10 files, 2 speakers, 5 labels" in out.stdout
    assert len(list((tmp_path / "s").rglob("*.wav"))) == 10


def test_demo_small_and_rerun_reuses(tmp_path):
    out = run_cli("demo", "--out", tmp_path / "d", "--per-class", "1", "--speakers", "2")
    assert out.returncode == 0, out.stderr
    assert "10 computed" in out.stdout and "angry 2, fearful 2, happy 2, neutral 2, sad 2" in out.stdout
    again = run_cli("demo", "--out", tmp_path / "d", "--per-class", "1", "--speakers", "2")
    assert again.returncode == 0 and "already in" in again.stdout and "10 already cached" in again.stdout


def test_readme_quick_start_is_two_commands():
    text = (REPO / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "emodet demo" in commands[0] and "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and commands[1].strip() in ci
