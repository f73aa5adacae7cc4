"""Data-parallel training: 2 CPU processes (gloo, under torchrun) follow the loss trajectory of one
process with the same global batch, write one set of checkpoints, and resume from them."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("_ddp_train.py")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")


def _start(ckpt, out, nproc):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    return subprocess.Popen([sys.executable, *launch, str(SCRIPT), str(ckpt), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc):
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log


def test_two_processes_match_one_process_and_resume(tmp_path):
    single, ddp = _start(tmp_path / "c1", tmp_path / "o1", 1), _start(tmp_path / "c2", tmp_path / "o2", 2)
    _finish(single)
    _finish(ddp)
    one = json.loads((tmp_path / "o1" / "history.json").read_text())
    two = json.loads((tmp_path / "o2" / "history.json").read_text())
    assert [h["step"] for h in one["history"]] == [h["step"] for h in two["history"]] == list(range(1, 7))
    assert one["tokens"] == two["tokens"]  # same global batches, tokens summed over ranks
    for a, b in zip(one["history"], two["history"]):
        # token-weighted shares make the split exact up to float rounding (observed ~1e-7 relative)
        for key in ("loss", "accuracy", "grad_norm", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
        assert ("val_loss" in a) == ("val_loss" in b)
        if "val_loss" in a:
            assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
    w1 = load_file(tmp_path / "o1" / "rank0.safetensors")
    w_rank0, w_rank1 = (load_file(tmp_path / "o2" / f"rank{r}.safetensors") for r in (0, 1))
    for key in w1:
        assert torch.equal(w_rank0[key], w_rank1[key]), f"ranks diverged on {key}"
        torch.testing.assert_close(w_rank0[key], w1[key], rtol=1e-4, atol=1e-5)

    # rank 0 alone wrote the checkpoints: one set, no leftovers from other ranks
    assert sorted(p.name for p in (tmp_path / "c2").iterdir()) == ["step-000002", "step-000004"]

    # a 2-process run resumes from its checkpoint and ends where the uninterrupted one did
    shutil.rmtree(tmp_path / "c2" / "step-000004")
    _finish(_start(tmp_path / "c2", tmp_path / "o3", 2))
    resumed = json.loads((tmp_path / "o3" / "history.json").read_text())
    # the history logged before the checkpoint comes back from it: the whole run's steps
    assert resumed["resumed_from"] == 2 and [h["step"] for h in resumed["history"]] == [1, 2, 3, 4, 5, 6]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in two["history"]]
    w_resumed = load_file(tmp_path / "o3" / "rank0.safetensors")
    for key in w1:
        assert torch.equal(w_resumed[key], w_rank0[key]), f"{key} differs after resume"
