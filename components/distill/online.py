"""SCRG during training (`distill.scrg_schedule: online | mixed`): a share of every micro-batch is
sampled fresh by the *current* student, scored by one teacher and one student forward pass, corrected at
the most divergent disagreeing token and regenerated from the prefix cache, all through
components.distill.scrg (`revise_mixed`, the same code the offline `scrg_correct` stage runs). This is
how the paper combines SCRG with on-policy sampling (Liu et al. 2024, Table 3a): the corrected samples
follow the student as it learns instead of going stale.

Usage::

    hook = scrg_hook(teacher, student, tokenizer, cfg.scrg, share=0.5, seed=0, chunker=chunker,
                     max_seq_tokens=768)
    Trainer(..., batch_hook=hook)          # hook(examples, micro_index) -> examples

Each micro-batch draws from `seed * 7919 + micro_index`, so a resumed run (the Trainer restores the
student's weights) samples exactly what the uninterrupted run sampled. A resampled row keeps its SFT
target (the teacher's response or the reference) but is never itself an SFT target.
"""

from __future__ import annotations

from collections.abc import Callable

from components.distill.data import Example
from components.distill.scrg import revise_mixed
from components.distill.spans import PhraseChunker, pair_starts
from semflow.config import ScrgConfig


def scrg_hook(teacher, student, tokenizer, scrg: ScrgConfig, share: float, seed: int,
              chunker: PhraseChunker | None, max_seq_tokens: int, sft_targets: bool = True,
              stats: dict[str, float] | None = None) -> Callable[[list[Example], int], list[Example]]:
    """A Trainer batch hook replacing round(share * len(examples)) rows of each micro-batch by SCRG-revised
    fresh student samples. A replaced row keeps an SFT target (the supervised response it replaced, or
    that row's own target) when `sft_targets`, else none (`sft_target: supervised_rows`). `stats`, when
    given, accumulates rows, corrected rows and regenerated tokens."""

    def hook(examples: list[Example], micro_index: int) -> list[Example]:
        if share <= 0 or not examples:
            return examples
        cfg = scrg.model_copy(update={"on_policy": share, "seed": seed * 7919 + micro_index,
                                      "correct_off_policy": False})
        was_training = student.training
        student.eval()
        try:
            on_policy, _, result = revise_mixed(teacher, student, tokenizer, [e.prompt for e in examples],
                                                [e.response for e in examples], cfg, progress=False)
        finally:
            student.train(was_training)
        out = []
        for e, fresh, ids, positions, regen in zip(examples, on_policy, result.revised, result.positions,
                                                   result.regenerated, strict=True):
            if not fresh:
                out.append(e)
                continue
            ids = ids[: max_seq_tokens - len(e.prompt)]
            pairs = pair_starts(tokenizer, ids, chunker) if chunker is not None and ids else [False] * len(ids)
            target = (e.response if e.supervised else e.target) if sft_targets else None
            out.append(Example(e.prompt, ids, pairs, supervised=False, target=target))
            if stats is not None:
                stats["online_rows"] = stats.get("online_rows", 0.0) + 1
                stats["online_corrected"] = stats.get("online_corrected", 0.0) + bool(positions)
                stats["online_regenerated"] = stats.get("online_regenerated", 0.0) + regen
        return out

    return hook
