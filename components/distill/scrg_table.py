"""The SCRG data set of the `scrg_correct` stage: every training prompt's sequence (a student sample,
or the teacher's response for the off-policy share), corrected and regenerated once before training
(components.distill.scrg), as a table the `offline` distillation schedule trains on.

Usage::

    table, metrics = scrg_table(teacher, student, tokenizer, responses, generation, scrg)
    table[["prompt", "original", "revised", "j", "d_j"]]
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from components.distill.data import DistillDataError, response_ids, tokenize_prompts
from components.distill.scrg import revise_mixed
from components.generation import format_prompts
from semflow.config import GenerationConfig, ScrgConfig


def scrg_table(teacher, student, tokenizer, responses: pd.DataFrame, generation: GenerationConfig, scrg: ScrgConfig,
               progress: bool = True) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per training prompt: `prompt, prompt_ids, source, original(_ids), revised(_ids), j, d_j` (first
    correction), `positions, divergences` (all rounds), `tokens_regenerated, corrected`; and metrics."""
    table = responses[responses["split"] == "train"].reset_index(drop=True)
    if table.empty:
        raise DistillDataError("scrg_correct: the training split is empty (no 'train' rows in the teacher's responses)")
    rendered = format_prompts(tokenizer, table["instruction"].tolist(), table["input"].tolist(), generation.system_prompt)
    prompts, truncated = tokenize_prompts(tokenizer, rendered, generation.max_prompt_tokens, generation.on_long_prompt,
                                          ids=table["id"].tolist())
    n = len(table)
    teacher_ids = response_ids(tokenizer, table["response"].tolist(), table["finished"].tolist())
    on_policy, sequences, result = revise_mixed(teacher, student, tokenizer, prompts, teacher_ids, scrg,
                                                progress=progress)
    n_scored = max(n if scrg.correct_off_policy else sum(on_policy), 1)

    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
    first_j = [p[0] if p else -1 for p in result.positions]
    out = table[["id", "split", "instruction", "input", "reference"]].assign(
        source=["student" if x else "teacher" for x in on_policy],
        prompt=rendered,
        prompt_ids=prompts,
        original=[decode(x) for x in sequences],
        original_ids=sequences,
        revised=[decode(x) for x in result.revised],
        revised_ids=result.revised,
        j=first_j,
        d_j=[d[0] if d else math.nan for d in result.divergences],
        positions=result.positions,
        divergences=result.divergences,
        tokens_regenerated=result.regenerated,
        corrected=[bool(p) for p in result.positions],
    )
    corrected = [k for k in range(n) if result.positions[k]]
    metrics = {
        "sequences": float(n),
        "on_policy_share": sum(on_policy) / n,
        "corrected_share": len(corrected) / n_scored,  # of the sequences SCRG scored
        "corrections_total": float(sum(len(p) for p in result.positions)),
        "mean_d_j": float(np.mean([result.divergences[k][0] for k in corrected])) if corrected else 0.0,
        "mean_j_over_len": float(np.mean([first_j[k] / max(len(sequences[k]), 1) for k in corrected]))
        if corrected else 0.0,
        "tokens_regenerated_mean": float(np.mean(result.regenerated)),
        "prompts_truncated": float(truncated),
    }
    return out, metrics
