"""The training loop shared by the student warm-up, distillation and SE-DSI indexing.

Usage::

    from components.training import Trainer
    trainer = Trainer(model, loss_fn, train_examples, collate_fn, cfg.distill.train, ckpt_dir)
    result = trainer.train()      # resumes from the newest checkpoint in ckpt_dir if there is one
"""

from components.training.trainer import STATE, Trainer, TrainResult, label_tokens

__all__ = ["STATE", "TrainResult", "Trainer", "label_tokens"]
