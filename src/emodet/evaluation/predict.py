"""A model's logits over a DataLoader, or over manifest rows through the feature cache."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..data.cache import FeatureCache
from ..data.dataset import FeatureDataset, locate, missing_file, pad_collate, pool_chunks, row_cache
from ..data.normalize import GROUPED_MODES, Normalizer
from ..training.device import autocast_context, unwrap


@torch.no_grad()
def predict_logits(model: nn.Module, loader, device: torch.device | str = "cpu", amp: bool = False):
    """Logits ``(N, C)`` float32 and targets ``(N,)`` of a loader (``chunk_collate`` batches pooled per item)."""
    device = torch.device(device)
    model = unwrap(model)  # DDP: no collectives in evaluation
    model.eval()
    outs, targets = [], []
    for batch in loader:
        x, y, lengths = batch[0].to(device), batch[1], batch[2].to(device)
        with autocast_context(device, amp):
            logits = model(x, lengths).float()
        if len(batch) > 3 and torch.is_tensor(batch[3]):  # chunk_collate's owners: pool each item's windows
            logits = pool_chunks(logits, batch[3].to(device), len(y))
        outs.append(logits.cpu())
        targets.append(y)
    if not outs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(targets)


def predict_rows(model: torch.nn.Module, rows: list[dict], root, manifest_path, labels: list[str],
                 cache: FeatureCache, normalizer: dict, batch_size: int = 32,
                 variant_caches: dict | None = None) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` for manifest ``rows`` (whole recordings, cached features; a row with a
    ``variant`` key, an augmented copy, from ``variant_caches``).

    ``normalizer``: the run's saved normalisation (``{"mode": ...}``); ``speaker`` (``corpus``) mode
    takes each speaker's (corpus's) statistics from the given rows of that speaker (corpus).
    """
    from torch.utils.data import DataLoader

    for i, r in enumerate(rows):
        base, rel = locate(r["path"], root, manifest_path)
        if not (base / rel).is_file():
            raise missing_file(manifest_path, i, r["path"], root)
    mode = normalizer.get("mode", "none")
    norm = Normalizer.from_dict(normalizer)
    if mode in GROUPED_MODES:  # the groups' statistics from these rows; the run's projection, if any, kept
        def load(r):
            return row_cache(r, cache, variant_caches).load(*locate(r["path"], root, manifest_path))

        norm = dataclasses.replace(Normalizer.fit(mode, rows, load, whiten=norm.whiten), nap=norm.nap)
    ds = FeatureDataset(rows, root, cache, labels, normalizer=norm, manifest_path=manifest_path,
                        variant_caches=variant_caches)
    device = next(model.parameters()).device
    logits, _ = predict_logits(model, DataLoader(ds, batch_size=batch_size, collate_fn=pad_collate), device)
    return logits
