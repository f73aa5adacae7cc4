"""Stage 3: SCRG. The student answers the training prompts, the teacher and student score each
answer, the most divergent disagreeing token is replaced by the teacher's and the student rewrites
the rest (components/distill/scrg.py). Off-policy rows start from the teacher's response instead."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow

from semflow.caching import stage_key
from semflow.config import GenerationConfig, ModelConfig, ScrgConfig
from semflow.runtime import RunContext
from semflow.store import OutputRef, StageManifest
from tasks._stage import cached_stage, load_student, output_path, run_stage

STAGE = "scrg_correct"
MODULES = ("components.distill", "components.generation", "components.models", "tasks.scrg_correct", "tasks._stage")


def cache_key(teacher: ModelConfig, generation: GenerationConfig, scrg: ScrgConfig, responses: StageManifest,
              student: StageManifest, on_long_prompt: str = "truncate") -> str:
    config = {"teacher": teacher, "scrg": scrg,
              "prompting": {"system_prompt": generation.system_prompt, "max_prompt_tokens": generation.max_prompt_tokens,
                            "on_long_prompt": on_long_prompt}}
    upstream = {"responses": responses.output("responses").digest, "student": student.output("student").digest}
    return stage_key(STAGE, config, upstream, MODULES)


@cached_stage(STAGE, cache_key)
def scrg_correct(teacher: ModelConfig, generation: GenerationConfig, scrg: ScrgConfig, responses: StageManifest,
                 student: StageManifest, on_long_prompt: str, run: RunContext) -> StageManifest:
    """`on_long_prompt` (distill.on_long_prompt): prompts over generation.max_prompt_tokens keep their
    last tokens and are counted (`truncate`), or the stage fails naming them (`fail`)."""
    import numpy as np

    from components.data import read_dataset, write_dataset
    from components.distill import DistillDataError, revise_mixed, tokenize_prompts
    from components.distill.data import response_ids
    from components.generation import format_prompts
    from components.models import load_model

    def body(tmp: Path):
        table = read_dataset(output_path(responses, "responses"))
        table = table[table["split"] == "train"].reset_index(drop=True)
        if table.empty:
            raise DistillDataError(f"{STAGE}: the training split is empty (no 'train' rows in the teacher's responses)")
        t = load_model(teacher, run.model_cache)
        s = load_student(student, t, teacher, run.model_cache)
        tok = t.tokenizer
        rendered = format_prompts(tok, table["instruction"].tolist(), table["input"].tolist(), generation.system_prompt)
        prompts, truncated = tokenize_prompts(tok, rendered, generation.max_prompt_tokens, on_long_prompt,
                                              ids=table["id"].tolist())

        n = len(table)
        teacher_ids = response_ids(tok, table["response"].tolist(), table["finished"].tolist())
        on_policy, sequences, result = revise_mixed(t.model, s.model, tok, prompts, teacher_ids, scrg)
        n_scored = max(n if scrg.correct_off_policy else sum(on_policy), 1)

        decode = lambda ids: tok.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
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
        info = write_dataset(out, tmp / "scrg.parquet")
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
        mlflow.set_tag("semflow.student", s.name)
        preview = out[["id", "source", "original", "revised", "j", "d_j", "tokens_regenerated"]]
        return {"scrg": OutputRef(path="scrg.parquet", digest=info.digest, rows=info.rows)}, metrics, {"scrg": preview}

    params = {"teacher": teacher, "scrg": scrg, "upstream.responses": responses.output("responses").digest,
              "upstream.student": student.output("student").digest}
    key = cache_key(teacher, generation, scrg, responses, student, on_long_prompt)
    return run_stage(STAGE, key, run, params, body)
