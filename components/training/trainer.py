"""A small resumable training loop, shared by distillation and SE-DSI.

AdamW (parameter groups with their own learning rates), warm-up then decay, gradient accumulation,
clipping, bf16 autocast on CUDA (fp32 on CPU). Every `checkpoint_every` optimizer steps it writes
`<ckpt_dir>/step-NNNNNN/` (to a temporary name, then renamed, so a kill never leaves a half
checkpoint): the model's weights and every extra module's (safetensors), the optimizer, the scheduler,
the RNG states, the data position and the history logged so far. `Trainer.train()` resumes from the
newest complete checkpoint, so a resumed run returns the same history as an uninterrupted one.

The data order of epoch e is a permutation drawn from `seed + e`, so the batch at any step is a
function of the step alone: a run resumed at step k sees exactly the batches an uninterrupted run
sees from step k, and on CPU ends with the same weights.

Example::

    trainer = Trainer(model, loss_fn, train_examples, collate_fn, TrainerConfig(max_steps=100),
                      ckpt_dir="run/checkpoints", extra_modules={"band": objective},
                      param_groups=[{"params": objective.parameters(), "lr": 1e-3}])
    result = trainer.train()      # result.resumed_from: the step it restarted from (0: fresh)

`loss_fn(batch) -> (loss, stats)` computes the loss of one collated micro-batch; `batch_hook(examples,
step)` may replace a micro-batch's examples before collation (GKD's on-policy sampling uses it).

Multi-process data parallelism (DDP). When the caller (torchrun, `accelerate launch`, a test) has
initialised `torch.distributed` with world size > 1 — the Trainer never initialises it — the run is
data-parallel, and its steps are the steps of a single process with the same config:

* Data: `cfg.batch_size` is the GLOBAL micro-batch size. Every rank computes the same
  `micro_batches(step)` and takes a contiguous share of each micro-batch (sizes differ by at most one;
  a rank may get none), so the sequence of global batches does not depend on the world size.
* Gradients: after the micro-batches' backward passes, the gradients of every trained parameter
  (the model's and the extra param groups', e.g. the MGSR band) are summed across ranks in one
  all-reduce, before clipping. Not `DistributedDataParallel`: loss functions here call the model's
  submodules directly (`model.model(...)`, `get_output_embeddings()`), which bypasses a DDP wrapper's
  forward, so its reducer would not be armed and gradients would silently stay unsynchronised; and
  parameters outside the model (the extra groups) would need a second wrapper. One explicit
  all-reduce covers every parameter and works with any loss function.
* Loss weighting: rank r's micro-batch loss is scaled by w_r / sum(w) before backward, so the summed
  gradient is that of the whole micro-batch's loss. w_r is `loss_weight(batch)` when given — for a
  per-token mean loss pass the number of loss tokens, e.g. ``lambda b: (b["labels"][:, 1:] != -100).sum()``,
  which makes the split exact up to float rounding (~1e-6 relative) — and otherwise the number of
  examples, which is exact for per-example means and only approximate for per-token means when ranks
  get different numbers of tokens.
* Metrics (loss, stats) are the same weighted means across ranks, tokens and tokens/s are summed;
  every rank returns the same history, only rank 0 calls `on_log` and shows the progress bar.
  Validation batches are split round-robin across ranks and the loss is reduced.
* Checkpoints: only rank 0 writes (the others wait at a barrier); the RNG states of every rank are
  stored so each rank resumes its own. Every rank loads the newest checkpoint, so `ckpt_dir` must be
  on a file system all ranks see (one machine, or a shared disk). At start rank 0's weights are
  broadcast, as DDP does, so ranks need not be initialised identically.
* Devices: place the model on the rank's device before building the Trainer (e.g.
  ``model.to(f"cuda:{local_rank}")`` after ``torch.cuda.set_device(local_rank)``); gloo on CPU, nccl on CUDA.

With one process (or no process group) nothing of this runs and the loop is unchanged.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm
from transformers import get_scheduler

from components.rng import reseed, restore
from semflow.config import TrainerConfig

STATE = "trainer.pt"


def _numpy_state_to_safe(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _numpy_state_from_safe(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached


def label_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A micro-batch's loss weight under DDP for per-token mean losses: its label tokens (-100 is unlabelled)."""
    return (batch["labels"][:, 1:] != -100).sum()


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]],
        examples: list[Any],
        collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]],
        cfg: TrainerConfig,
        ckpt_dir: str | Path,
        val_examples: list[Any] | None = None,
        extra_modules: dict[str, torch.nn.Module] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
        batch_hook: Callable[[list[Any], int], list[Any]] | None = None,
        keep_checkpoints: int = 2,
        progress: bool = True,
        loss_weight: Callable[[dict[str, torch.Tensor]], float] | None = None,
    ):
        if not examples:
            raise ValueError("no training examples: the training split is empty")
        self.model, self.loss_fn, self.examples, self.collate_fn = model, loss_fn, examples, collate_fn
        self.cfg, self.ckpt_dir = cfg, Path(ckpt_dir)
        self.val_examples = val_examples or []
        self.extra_modules = extra_modules or {}
        self.on_log, self.batch_hook = on_log, batch_hook
        self.keep, self.progress = keep_checkpoints, progress
        self._history: list[dict[str, float]] = []  # the running result's history, saved in checkpoints
        self._restored_history: list[dict[str, float]] = []
        self.device = next(model.parameters()).device
        self.loss_weight = loss_weight
        self.rank, self.world_size = _world()

        per_step = cfg.batch_size * cfg.grad_accum
        self.steps_per_epoch = math.ceil(len(examples) / per_step)
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
        for group in param_groups or []:
            groups.append({**group, "params": [p for p in group["params"] if p.requires_grad]})
        groups = [g for g in groups if g["params"]]
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = get_scheduler(
            cfg.scheduler, self.optimizer,
            num_warmup_steps=int(cfg.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )

    # ------------------------------------------------------------------------------------- data
    def micro_batches(self, step: int) -> list[list[Any]]:
        """The micro-batches of optimizer step `step` (0-based), a pure function of the step."""
        cfg, n = self.cfg, len(self.examples)
        out = []
        for m in range(cfg.grad_accum):
            start = (step * cfg.grad_accum + m) * cfg.batch_size
            epoch, offset = divmod(start, self.steps_per_epoch * cfg.grad_accum * cfg.batch_size)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
            chunk = order[offset : offset + cfg.batch_size]
            if chunk:
                out.append([self.examples[i] for i in chunk])
        return out

    def shard(self, examples: list[Any]) -> list[Any]:
        """This rank's contiguous share of a (global) micro-batch; all of it with one process."""
        base, extra = divmod(len(examples), self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return examples[start : start + base + (self.rank < extra)]

    # -------------------------------------------------------------------------- distributed
    def _all_reduce_grads(self) -> None:
        """Sum every trained parameter's gradient across ranks (one flat all-reduce).

        A flag per parameter travels along, so a parameter no rank used keeps `grad=None` (AdamW then
        skips it, as with one process)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        used = torch.tensor([p.grad is not None for p in self.params], dtype=grads[0].dtype, device=self.device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [used])
        dist.all_reduce(flat)
        offset = 0
        for p, flag in zip(self.params, flat[-len(self.params) :].tolist()):
            p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype) if flag else None
            offset += p.numel()

    @torch.no_grad()
    def _broadcast_weights(self) -> None:
        """Make every rank start from rank 0's weights (as DistributedDataParallel does)."""
        for module in [self.model, *self.extra_modules.values()]:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, 0)

    # --------------------------------------------------------------------------------- training
    def train(self) -> TrainResult:
        start_step = self.load_latest()
        distributed = self.world_size > 1
        if start_step == 0:  # a fresh run draws (dropout, sampling hooks) from the configured seed
            # ranks draw different dropout masks; rank 0 as one process
            reseed(self.cfg.seed + self.rank)
        if distributed:
            self._broadcast_weights()
        # a resumed run's history starts with the steps logged before the interruption
        result = TrainResult(steps=self.total_steps, resumed_from=start_step, history=self._restored_history)
        self._history = result.history
        self.model.train()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        bar = tqdm(total=self.total_steps, initial=start_step, desc="train", unit="step",
                   disable=not self.progress or self.rank != 0)
        begin = time.perf_counter()
        for step in range(start_step, self.total_steps):
            t0, tokens, sums = time.perf_counter(), 0, {}
            micro = self.micro_batches(step)
            for m, examples in enumerate(micro):
                examples = self.shard(examples)
                if not examples:  # fewer examples than ranks: this rank sits the micro-batch out
                    if distributed:
                        dist.all_reduce(torch.zeros((), dtype=torch.float64, device=self.device))
                    continue
                if self.batch_hook is not None:
                    examples = self.batch_hook(examples, step * self.cfg.grad_accum + m)
                batch = {k: v.to(self.device) for k, v in self.collate_fn(examples).items()}
                if distributed:  # this rank's share of the micro-batch's loss weight
                    weight = float(self.loss_weight(batch)) if self.loss_weight else float(len(examples))
                    total = torch.tensor(weight, dtype=torch.float64, device=self.device)
                    dist.all_reduce(total)
                    share = weight / max(float(total), 1e-12)
                with autocast:
                    loss, stats = self.loss_fn(batch)
                if distributed:
                    (loss * (share / len(micro))).backward()
                else:
                    (loss / len(micro)).backward()
                tokens += int(batch["attention_mask"].sum())
                for k, v in {"loss": float(loss.detach()), **stats}.items():
                    sums[k] = sums.get(k, 0.0) + (v * share if distributed else v) / len(micro)
            if distributed:
                self._all_reduce_grads()
                gathered: list[Any] = [None] * self.world_size
                dist.all_gather_object(gathered, (sums, tokens))
                sums = {k: sum(s.get(k, 0.0) for s, _ in gathered) for k in gathered[0][0]}
                tokens = sum(t for _, t in gathered)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            result.tokens += tokens
            done = step + 1
            metrics = {**sums, "grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0],
                       "tokens_per_second": tokens / max(time.perf_counter() - t0, 1e-9)}
            if self.val_examples and (done % self.cfg.eval_every == 0 or done == self.total_steps):
                metrics["val_loss"] = self.evaluate()
            if done % self.cfg.log_every == 0 or done == self.total_steps:
                result.history.append({"step": done, **metrics})
                if self.on_log and self.rank == 0:
                    self.on_log(done, metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            if done % self.cfg.checkpoint_every == 0 and done < self.total_steps:
                self.save(done)
        bar.close()
        self.model.eval()
        result.seconds = time.perf_counter() - begin
        return result

    @torch.no_grad()
    def evaluate(self) -> float:
        was_training = self.model.training
        self.model.eval()
        total, weight = 0.0, 0
        starts = range(0, len(self.val_examples), self.cfg.batch_size)
        for i in starts[self.rank :: self.world_size]:  # every batch with one process
            chunk = self.val_examples[i : i + self.cfg.batch_size]
            batch = {k: v.to(self.device) for k, v in self.collate_fn(chunk).items()}
            loss, _ = self.loss_fn(batch)
            total, weight = total + float(loss) * len(chunk), weight + len(chunk)
        self.model.train(was_training)
        if self.world_size > 1:
            reduced = torch.tensor([total, weight], dtype=torch.float64, device=self.device)
            dist.all_reduce(reduced)
            total, weight = float(reduced[0]), int(reduced[1])
        return total / max(weight, 1)

    # ------------------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> Path:
        """Write the checkpoint of `step` (rank 0 only; with several ranks every rank must call it)."""
        final = self.ckpt_dir / f"step-{step:06d}"
        rng = self._rng_state()
        if self.world_size > 1:
            per_rank: list[Any] = [None] * self.world_size
            dist.all_gather_object(per_rank, rng)
            if self.rank != 0:
                dist.barrier()  # until rank 0 has written the checkpoint
                return final
        tmp = self.ckpt_dir / f".step-{step:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(self.model, str(tmp / "model.safetensors"))  # handles tied embeddings
        for name, module in self.extra_modules.items():
            save_model(module, str(tmp / f"{name}.safetensors"))
        epoch, offset = divmod(step * self.cfg.grad_accum * self.cfg.batch_size,
                               self.steps_per_epoch * self.cfg.grad_accum * self.cfg.batch_size)
        torch.save(
            {
                "step": step,
                "data_position": {"epoch": epoch, "example_offset": offset},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng,
                **({"rng_per_rank": per_rank} if self.world_size > 1 else {}),
                "history": list(self._history),  # plain floats: loads with weights_only=True
            },
            tmp / STATE,
        )
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        if self.world_size > 1:
            dist.barrier()
        return final

    @staticmethod
    def _rng_state() -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(),
            # as plain values and a tensor, so the checkpoint loads with torch.load(weights_only=True)
            "numpy": _numpy_state_to_safe(np.random.get_state()),
        }

    def checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.is_dir():
            return []
        return sorted(p for p in self.ckpt_dir.glob("step-*") if (p / STATE).is_file())

    def load_latest(self) -> int:
        """Restore the newest complete checkpoint; returns its step (0 when there is none)."""
        found = self.checkpoints()
        self._restored_history = []
        if not found:
            return 0
        path = found[-1]
        load_model(self.model, str(path / "model.safetensors"), device=str(self.device))
        for name, module in self.extra_modules.items():
            load_model(module, str(path / f"{name}.safetensors"), device=str(self.device))
        # weights_only: a checkpoint is data (tensors, numbers, strings), never code to unpickle
        state = torch.load(path / STATE, weights_only=True, map_location=self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._restored_history = [dict(row) for row in state.get("history", [])]
        per_rank = state.get("rng_per_rank")  # a multi-process checkpoint: each rank resumes its own
        states = per_rank[self.rank] if per_rank and len(per_rank) == self.world_size else state["rng"]
        restore(states["torch"].cpu(), _numpy_state_from_safe(states["numpy"]), states["python"])
        if states["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        return int(state["step"])

