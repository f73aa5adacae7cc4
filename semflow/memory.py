"""Giving freed memory back to the operating system between stages.

A stage that loads models and trains frees everything it allocated when it returns, but glibc's malloc
keeps the freed heap pages (one arena per thread that allocated: torch's intra-op threads, Prefect's task
threads) and the process's resident size stays where the stage's peak left it. When one process runs
stage after stage, as `semflow compare` does for every (method, seed), fragmentation makes that grow:
a CPU-size Dolly comparison reached 23.8 GB RSS in its sixth distillation and was killed by the OOM
killer, with no model or tensor alive in Python (measured 2026-12-08; bench/results/distill.md
section 3b). `release_memory()` after each stage asks glibc to return the free pages (`malloc_trim(0)`):
on the same runs RSS fell from 2.4-5.1 GB to 0.85-0.90 GB after each stage, and with the call in every
stage three fresh distillations in one process each ended at 0.81-0.90 GB.

It does not call `gc.collect()`: a stage's models are freed by reference counting when its body returns
(the same 0.85-0.90 GB with or without a collection first), and a full collection costs ~0.5 s in a process
that has imported Prefect, MLflow and transformers, which the test suite's many small stage runs
would pay at every stage.

    from semflow.memory import release_memory
    release_memory()   # True where glibc's malloc_trim ran (Linux), False elsewhere (nothing to do)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (musl, macOS, Windows: no such call; their allocators differ)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """Return free heap pages to the OS where the C library can (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
