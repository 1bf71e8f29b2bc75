import pytest

from emodet import __version__

from conftest import REPO, cli, run_cli


def test_version_and_help():
    out = run_cli("--version")  # the installed entry point, in a process of its own
    assert out.returncode == 0 and out.stdout.strip() == f"emodet {__version__}"
    out = cli("--help")
    assert out.returncode == 0
    for verb in ("demo", "data", "features"):
        assert verb in out.stdout
    assert cli().returncode == 2
    bad = cli("nonsense")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


COMMANDS = [["demo"], ["data", "synth"], ["data", "prepare"], ["data", "split"], ["features"], ["train"], ["evaluate"],
            ["cv"], ["ensemble"], ["export"], ["predict"], ["calibrate"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_help_screen_explains_each_flag_and_shows_an_example(command):
    import argparse

    from emodet.cli import build_parser

    out = cli(*command, "--help")
    assert out.returncode == 0 and "examples:" in out.stdout and f"emodet {' '.join(command)}" in out.stdout
    parser = build_parser()
    for word in command:  # the subparser of the command
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    for action in parser._actions:
        assert action.help, f"emodet {' '.join(command)}: {action.option_strings or action.dest} has no help text"


def test_features_list():
    out = cli("features", "--list")
    assert out.returncode == 0
    assert "logmel" in out.stdout and "alias: mel" in out.stdout and "egemaps" in out.stdout
    assert "parameters: trim_db=null" in out.stdout and "n_mels=64" in out.stdout  # each feature's defaults


def test_data_synth(tmp_path):
    out = cli("data", "synth", "--out", tmp_path / "s", "--per-class", "1", "--speakers", "2", "--seed", "4")
    assert out.returncode == 0, out.stderr
    assert "10 files, 2 speakers, 5 labels" in out.stdout
    assert len(list((tmp_path / "s").rglob("*.wav"))) == 10


def test_demo_small_and_rerun_reuses(tmp_path):
    args = ("demo", "--out", tmp_path / "d", "--per-class", "2", "--speakers", "3", "--epochs", "1")
    out = cli(*args)
    assert out.returncode == 0, out.stderr
    assert "30 files" in out.stdout and "angry 6, fearful 6, happy 6, neutral 6, sad 6" in out.stdout
    table = out.stdout.split("held-out speakers", 1)[1]
    assert "fc_mfcc" in table and "crnn_tiny_logmel" in table
    for run in ("fc_mfcc", "crnn_tiny_logmel"):
        assert (tmp_path / "d" / "runs" / run / "metrics.json").is_file()
    assert (tmp_path / "d" / "crnn_tiny_logmel.onnx").is_file() and "[4/4] exported" in out.stdout
    assert "ms a clip with onnxruntime" in out.stdout
    again = cli(*args)
    assert again.returncode == 0 and "already in" in again.stdout and "already trained" in again.stdout
    few = cli("demo", "--out", tmp_path / "e", "--speakers", "2")
    assert few.returncode == 2 and "at least 3 speakers" in few.stderr


def test_readme_quick_start_is_two_commands():
    text = (REPO / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "emodet demo" in commands[0] and "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and commands[1].strip() in ci
