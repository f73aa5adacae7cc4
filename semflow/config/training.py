"""The training loop's settings, shared by the student warm-up, distillation and SE-DSI indexing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from semflow.config.base import Section


class TrainerConfig(Section):
    """The training loop shared by distillation and SE-DSI (components/training)."""

    lr: float = Field(1e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps with a linear learning-rate warm-up")
    scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate decay after the warm-up"
    )
    batch_size: int = Field(4, gt=0, description="examples per micro-batch (the global batch under data parallelism)")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    epochs: float = Field(3.0, gt=0, description="passes over the training examples")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs")
    checkpoint_every: int = Field(10, gt=0, description="optimizer steps between checkpoints")
    eval_every: int = Field(10, gt=0, description="optimizer steps between validation losses")
    log_every: int = Field(1, gt=0, description="optimizer steps between logged training metrics")
    seed: int = Field(0, description="shuffling and initialisation seed")
