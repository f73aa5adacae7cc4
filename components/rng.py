"""One lock over the process's global random number generators, for code that seeds and then draws.

Pipeline stages run in threads of one process (independent branches of the DAG at the same time), and
torch's default generator is process-wide: `model.generate(do_sample=True)` and module initialisation
draw from it. Two stages that each seed it and then draw would interleave their draws and lose the
reproducibility the cache relies on (equal keys, equal artifacts). Every "seed, then draw" section holds
this lock, so its draws follow from its own seed whatever runs beside it; sections that do not draw
(forward and backward passes, greedy decoding) run concurrently as before.

Usage::

    with seeded(seed + batch_index):
        out = model.generate(ids, do_sample=True)   # draws from seed + batch_index only
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

_LOCK = threading.RLock()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Hold the global-RNG lock with torch, numpy and random seeded from `seed`."""
    with _LOCK:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield


@contextmanager
def isolated(seed: int) -> Iterator[None]:
    """`seeded(seed)` that puts the process's torch (CPU), numpy and random states back afterwards: for a
    draw that must not reset the streams of whatever the caller does next (a module's initialisation)."""
    with _LOCK, torch.random.fork_rng(devices=[]):
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with seeded(seed):
                yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
