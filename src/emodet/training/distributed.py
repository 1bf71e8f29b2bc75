"""Distributed training with torchrun: DDP over gloo (CPU) or NCCL (GPU), rank 0 alone writes.

    torchrun --nproc_per_node 2 -m emodet train --config C --run-name R

Semantics: ``training.batch_size`` is the global batch; each of N processes takes
``batch_size / N`` of it (it must divide evenly), so N processes take the same optimiser
steps as one process with the same seed (equal up to float rounding: gradients are averaged
by all-reduce). The training data is split by a distributed sampler (when the training
split is not a multiple of N, a few recordings are repeated, as ``DistributedSampler``
does); validation is split across ranks without repeats and its outputs are gathered, so
every rank sees the same metrics and early-stopping decision. Batch normalisation statistics
are per process on CPU (SyncBatchNorm on CUDA).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from ..core.errors import UsageError


class Distributed:
    """The process group of this run and the helpers the experiment needs."""

    def __init__(self):
        self.cuda = torch.cuda.is_available() and os.environ.get("EMODET_DDP_DEVICE", "auto") != "cpu"
        backend = "nccl" if self.cuda else "gloo"
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if self.cuda:
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device("cuda", self.local_rank) if self.cuda else torch.device("cpu")
        self.is_main = self.rank == 0

    def check_same(self, what: str, obj) -> None:
        """Refuse to start when ranks disagree about ``obj`` (config, data)."""
        digest = hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
        digests = [None] * self.world
        dist.all_gather_object(digests, digest)
        bad = [r for r, d in enumerate(digests) if d != digests[0]]
        if bad:
            raise UsageError(f"ranks disagree about the {what}: rank(s) {', '.join(map(str, bad))} differ from rank 0 "
                             "(every process must get the same config, data root and manifest)")

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world:
            raise UsageError(f"training.batch_size {global_batch} is the global batch and must divide evenly over "
                             f"{self.world} processes")
        return global_batch // self.world

    def make_sampler(self, dataset, seed: int):
        from torch.utils.data.distributed import DistributedSampler

        return DistributedSampler(dataset, num_replicas=self.world, rank=self.rank, shuffle=True, seed=seed)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        model = model.to(self.device)
        if self.cuda:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[self.local_rank])
        return DistributedDataParallel(model)

    def shard(self, items: list) -> list:
        """This rank's share of an evaluation list (no repeats)."""
        return items[self.rank::self.world]

    def gather(self, logits: torch.Tensor, targets: torch.Tensor):
        """Logits and targets of every rank, in rank order (for metrics equal on all ranks)."""
        parts = [None] * self.world
        dist.all_gather_object(parts, (logits.cpu(), targets.cpu()))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def maybe_init_distributed(cfg: dict) -> Distributed | None:
    """A ``Distributed`` when launched by torchrun with more than one process, else ``None``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    d = Distributed()
    try:
        d.check_same("config", cfg)
    except UsageError:
        d.close()
        raise
    return d
