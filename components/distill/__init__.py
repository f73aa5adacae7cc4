"""MGSR distillation (Liu et al. 2024, arXiv 2407.10068): SCRG correction (offline, or during training:
`online`), DAC-KL and span-correlation losses, the baselines beside them, and the evaluation (ROUGE-L,
repetition, distinct-2, paired bootstrap CIs). docs/distillation.md describes every option.

Usage::

    from components.distill import Objective, correct_and_regenerate, student_loss_fn
    from components.training import Trainer

    revised = correct_and_regenerate(teacher, student, tok, prompt_ids, sampled_ids, cfg.scrg).revised
    objective = Objective(cfg.distill)
    trainer = Trainer(student, student_loss_fn(student, teacher, objective, 512), examples, collate_fn,
                      cfg.distill.train, ckpt_dir, extra_modules={"objective": objective},
                      param_groups=[{"params": objective.parameters(), "lr": cfg.distill.band_lr}])
    trainer.train()

    from components.distill.recipe import distil   # the whole recipe: data, training, before/after scores
    run = distil(teacher, student, responses, scrg_table, cfg.distill, cfg.generation, cfg.scrg, "ckpt/")
"""

from components.distill.data import BuildReport, DistillDataError, Example, build_examples, collate, tokenize_prompts
from components.distill.evaluate import rouge_l
from components.distill.objective import Objective, distill_loss, student_loss_fn
from components.distill.scrg import (
    ScrgResult,
    correct_and_regenerate,
    revise_mixed,
    sample_responses,
    select_correction,
    token_divergence,
)
from components.distill.spans import PhraseChunker, pair_starts

__all__ = [
    "BuildReport",
    "DistillDataError",
    "Example",
    "Objective",
    "PhraseChunker",
    "ScrgResult",
    "build_examples",
    "collate",
    "correct_and_regenerate",
    "distill_loss",
    "pair_starts",
    "revise_mixed",
    "rouge_l",
    "sample_responses",
    "select_correction",
    "student_loss_fn",
    "token_divergence",
    "tokenize_prompts",
]
