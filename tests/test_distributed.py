import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO

TORCHRUN = shutil.which("torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two torchrun processes start and train (~30 s on 2 cores)
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_two_gloo_processes_reach_the_weights_of_one(tmp_path, synth_corpus):
    """2 processes x global batch 10 == 1 process x batch 10, same seed: same final weights."""
    args = ["train", "--config", str(REPO / "configs" / "lstm_mfcc.yaml"), "--data-root", str(synth_corpus),
            "--set", "data.corpus=folder", "--set", "data.split.val=1", "--set", "data.split.test=0",
            "--set", "data.max_seconds=null", "--set", "training.augment.specaugment=false",
            "--set", "training.loss.label_smoothing=0", "--set", "model.preset=tiny",
            "--set", "model.params.dropout=0.0", "--set", "training.batch_size=10", "--set", "training.epochs=2",
            "--set", "training.early_stopping.patience=0", "--set", f"features.cache_dir={tmp_path / 'cache'}",
            "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "emodet", *args, "--run-name", "one"], capture_output=True,
                            text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "emodet", *args,
                          "--run-name", "two"], capture_output=True, text=True, timeout=600, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("epoch   1 ") == 1 and ddp.stdout.count("trained on every speaker") == 1  # rank 0 alone
    one = torch.load(tmp_path / "runs" / "one" / "checkpoints" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "runs" / "two" / "checkpoints" / "last.pt", weights_only=True)
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, atol=2e-3, rtol=1e-3)
    assert one["epoch"] == two["epoch"] == 1
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["one", "two"]  # no per-rank directories: rank 0 alone writes


def _disagree(rank, world, port, results):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "EMODET_DDP_DEVICE": "cpu"})
    from emodet.training.distributed import Distributed
    from emodet.core.errors import UsageError

    d = Distributed()
    try:
        d.check_same("config", {"lr": 0.001 if rank == 0 else 0.002})
        results.put((rank, "no error"))
    except UsageError as exc:
        results.put((rank, str(exc)))
    finally:
        d.close()


def test_ranks_that_disagree_about_the_config_get_a_clear_error():
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_disagree, args=(r, 2, port, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    got = dict(results.get(timeout=5) for _ in range(2))
    for rank in (0, 1):
        assert "ranks disagree about the config: rank(s) 1 differ from rank 0" in got[rank]
