"""Train a tiny model with the Trainer, alone or under torchrun, for the DDP test.

    python _ddp_train.py CKPT_DIR OUT_DIR                                   # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 _ddp_train.py CKPT_DIR OUT_DIR

Writes OUT_DIR/history.json (rank 0: per-step metrics, resumed_from) and OUT_DIR/rank{R}.safetensors.
The data (7 examples of different lengths, global micro-batch 3, 2 micro-batches a step) gives ranks
uneven token counts and, at each epoch's end, a one-example micro-batch that rank 1 sits out."""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_model

from components.distill import collate
from components.training import Trainer
from components.distill.data import IGNORE, Example
from components.models.tiny import build_tiny_model
from semflow.config import TinyModelConfig, TrainerConfig

torch.set_num_threads(1)
ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
rank = dist.get_rank() if dist.is_initialized() else 0

model, tok = build_tiny_model(TinyModelConfig(seed=3, num_hidden_layers=1))
examples = [Example(tok(f"q{i}" * (1 + i % 3))["input_ids"], tok("ab" * (1 + 2 * i))["input_ids"] + [2],
                    [False] * (3 + 4 * i)) for i in range(7)]


def sft_loss(batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
    rows = labels != IGNORE
    return loss, {"accuracy": float((logits.argmax(-1)[rows] == labels[rows]).float().mean())}


cfg = TrainerConfig(batch_size=3, grad_accum=2, max_steps=6, checkpoint_every=2, eval_every=3, lr=3e-3,
                    warmup_ratio=0.2, weight_decay=0.01)
trainer = Trainer(model, sft_loss, examples, lambda ex: collate(ex, tok.pad_token_id), cfg, ckpt,
                  val_examples=examples[:4], progress=False,
                  loss_weight=lambda b: (b["labels"][:, 1:] != IGNORE).sum())  # per-token mean: weigh by tokens
result = trainer.train()
out.mkdir(parents=True, exist_ok=True)
save_model(model, str(out / f"rank{rank}.safetensors"))
if rank == 0:
    (out / "history.json").write_text(json.dumps({"resumed_from": result.resumed_from, "history": result.history,
                                                  "tokens": result.tokens}))
if dist.is_initialized():
    dist.destroy_process_group()
