"""Train a tiny MGSR student for the kill-and-resume test: python _train_tiny.py CKPT_DIR OUT [HANG_AT_STEP]

With HANG_AT_STEP the process writes CKPT_DIR/../hanging and sleeps at that step (after the checkpoint
before it), so the test can SIGKILL it mid-training."""

import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_model

from components.distill import Objective, build_examples, collate, student_loss_fn
from components.training import Trainer
from components.models.tiny import build_tiny_model
from semflow.config import DistillConfig, TinyModelConfig, TrainerConfig

torch.set_num_threads(1)
ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
hang_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
texts = [f"question {i}: what is {i} plus {i}?" for i in range(12)]
answers = [f"the answer is {2 * i}, of course." for i in range(12)]
cfg = DistillConfig(method="mgsr", top_k=16, chunk_size=32,
                    train=TrainerConfig(batch_size=2, grad_accum=2, max_steps=8, checkpoint_every=2, lr=1e-3,
                                        eval_every=4))
examples, _ = build_examples(tok, [tok(t)["input_ids"] for t in texts],
                             [tok(a)["input_ids"] + [2] for a in answers], cfg)
objective = Objective(cfg)


def on_log(step, metrics):
    print(f"step {step} loss {metrics['loss']:.4f}", flush=True)
    if "DEBUG" in __import__("os").environ: print(repr(metrics), flush=True)
    if hang_at is not None and step == hang_at:
        (ckpt.parent / "hanging").write_text(str(step))
        time.sleep(600)


trainer = Trainer(student, student_loss_fn(student, teacher, objective, cfg.chunk_size), examples,
                  lambda ex: collate(ex, tok.pad_token_id), cfg.train, ckpt, val_examples=examples[:3],
                  extra_modules={"objective": objective},
                  param_groups=[{"params": list(objective.parameters()), "lr": cfg.band_lr}],
                  on_log=on_log, progress=False)
result = trainer.train()
print(f"resumed_from {result.resumed_from}", flush=True)
out.mkdir(parents=True, exist_ok=True)
save_model(student, str(out / "student.safetensors"))
save_model(objective, str(out / "objective.safetensors"))
