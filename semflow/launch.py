"""Run a module as N data-parallel torchrun ranks, tied to this process's life.

Usage::

    returncode = torchrun("tasks.distill_train", job_file, processes=4)

torchrun starts each rank in a session of its own, so killing this process's group would not reach
them: torchrun gets SIGTERM when this process exits for any reason (PR_SET_PDEATHSIG, even on SIGKILL)
or when the caller fails, and it stops its ranks. No rank outlives the stage to race a resumed run.
The ranks' output goes to this process's terminal.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def torchrun(module: str, argument: str | Path, processes: int) -> int:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m module argument`; its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", module, str(argument)]
    log.info("%d processes: %s", processes, " ".join(command))
    agent = subprocess.Popen(command, preexec_fn=_terminate_with_parent)
    try:
        return agent.wait()
    finally:
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()


def _terminate_with_parent() -> None:
    """In the torchrun child, before exec: the kernel sends it SIGTERM when its parent dies (Linux)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
