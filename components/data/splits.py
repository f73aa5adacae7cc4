"""Assign each prompt to train/val/test by a seeded hash of its id.

Usage::

    from semflow.config import SplitConfig
    from components.data.splits import assign_split
    assign_split(["a", "b", "c"], SplitConfig(seed=1))  # ['train', 'train', 'train']

``u = int(sha256(f"{seed}:{id}").hexdigest()[:15], 16) / 16**15`` is uniform on [0, 1); the
prompt is train if ``u < train``, val if ``u < train + val``, else test. A prompt's split depends
only on its id and the seed, never on the other prompts, so adding data never moves an existing
prompt between splits (no test leakage into train across runs). The proportions are therefore only
approximate: on a small dataset a split can even be empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from semflow.config import SplitConfig

# 60 bits of hash: more than a float's 53-bit mantissa keeps, but the rounding is far below any
# meaningful split boundary, and the formula is fixed so that splits never change between versions.
_SCALE = 16**15


def split_unit(id_: str, seed: int) -> float:
    """The id's position in [0, 1) for this seed."""
    digest = hashlib.sha256(f"{seed}:{id_}".encode()).hexdigest()
    return int(digest[:15], 16) / _SCALE


def assign_split(ids: Iterable[str], split_cfg: SplitConfig) -> list[str]:
    """'train', 'val' or 'test' for each id, in order."""
    train_end = split_cfg.train
    val_end = split_cfg.train + split_cfg.val
    out = []
    for id_ in ids:
        u = split_unit(str(id_), split_cfg.seed)
        out.append("train" if u < train_end else "val" if u < val_end else "test")
    return out
