"""One lock over the process's global random number generators, for code that seeds and then draws.

Pipeline stages run in threads of one process (independent branches of the DAG at the same time), and
torch's default generator is process-wide: `model.generate(do_sample=True)` and module initialisation
draw from it. Two stages that each seed it and then draw would interleave their draws and lose the
reproducibility the cache relies on (equal keys, equal artifacts). Every "seed, then draw" section holds
this lock, so its draws follow from its own seed whatever runs beside it; sections that do not draw
(forward and backward passes, greedy decoding) run concurrently as before.

Every write to the global states goes through this module too (`reseed`, `restore`, `forked`): a bare
`torch.manual_seed` or `torch.set_rng_state` in one thread lands in the middle of another thread's
locked section and changes its draws. Measured before this rule: two threads building the smoke
preset's tiny teacher at once (`torch.random.fork_rng` + `manual_seed`, unlocked) got the serial
build's weights in only 4 and 22 of 40 builds (two runs), so the smoke pipeline's artifacts depended on
thread timing (a resumed run's student differed from an uninterrupted one's now and then). Draws made
outside any locked section (a training loop's dropout after `reseed`) can still interleave with another
thread's; the pipeline's training has no dropout, and its sampling draws are all locked or use their own
`torch.Generator`.

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
        reseed(seed)
        yield


def reseed(seed: int) -> None:
    """Seed torch (CPU), numpy and random from `seed` under the lock, for a caller that then draws
    from the global streams for a long time without holding the lock (a training loop's dropout)."""
    with _LOCK:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)


def restore(torch_state: torch.Tensor, numpy_state: tuple, python_state: tuple) -> None:
    """Put saved global states back (a resumed checkpoint's) under the lock."""
    with _LOCK:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@contextmanager
def forked(devices: list) -> Iterator[None]:
    """`torch.random.fork_rng(devices)` under the lock: its restore on exit writes the CPU state too."""
    with _LOCK, torch.random.fork_rng(devices=devices):
        yield


@contextmanager
def isolated(seed: int) -> Iterator[None]:
    """`seeded(seed)` that puts the process's torch (CPU), numpy and random states back afterwards: for a
    draw that must not reset the streams of whatever the caller does next (a module's initialisation)."""
    with forked([]):
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with seeded(seed):
                yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
