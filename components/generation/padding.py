"""Batching token-id rows of different lengths: the one padding routine every generating path shares."""

from __future__ import annotations

import torch


def pad_rows(rows: list[list[int]], pad_id: int, left: bool = True, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [len(rows), longest row], long tensors on `device`.

    Left padding (the default) is what a causal LM continues from, as `generate` pads prompts; right
    padding suits encoder inputs and training batches. An empty row is all padding."""
    width = max(max((len(r) for r in rows), default=0), 1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        if not len(r):
            continue
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[b, span] = torch.as_tensor(r, dtype=torch.long)
        mask[b, span] = 1
    return ids.to(device), mask.to(device)
