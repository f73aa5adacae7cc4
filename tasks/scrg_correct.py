"""Stage scrg_correct: SCRG over the training prompts before distillation. The student answers, the
teacher and student score each answer, the most divergent disagreeing token is replaced by the
teacher's and the student rewrites the rest (components/distill/scrg.py). Off-policy rows start from
the teacher's response instead. This is the off-policy SCRG data set (distill.scrg_schedule: offline)."""

from __future__ import annotations

import mlflow

from semflow.caching import StageKey
from semflow.config import GenerationConfig, ModelConfig, ScrgConfig
from semflow.runtime import RunContext
from semflow.store import StageManifest
from tasks._stage import Outputs, cached_stage, load_stage_model, read_output, run_stage


def key(teacher: ModelConfig, generation: GenerationConfig, scrg: ScrgConfig, generate_teacher: StageManifest,
        init_student: StageManifest) -> StageKey:
    config = {"teacher": teacher, "scrg": scrg,
              "prompting": {"system_prompt": generation.system_prompt, "max_prompt_tokens": generation.max_prompt_tokens,
                            "on_long_prompt": generation.on_long_prompt}}
    upstream = {"responses": generate_teacher.output("responses").digest,
                "student": init_student.output("student").digest}
    return StageKey(stage="scrg_correct", config=config, upstream=upstream)


@cached_stage(key)
def scrg_correct(teacher: ModelConfig, generation: GenerationConfig, scrg: ScrgConfig, generate_teacher: StageManifest,
                 init_student: StageManifest, run: RunContext) -> StageManifest:
    from components.distill.scrg_table import scrg_table
    from components.models import load_model

    def body(out: Outputs):
        t = load_model(teacher, run.model_cache)
        s = load_stage_model(init_student, "student", teacher, run.model_cache)
        table, metrics = scrg_table(t.model, s.model, t.tokenizer, read_output(generate_teacher, "responses"),
                                    generation, scrg)
        out.table("scrg", table)
        mlflow.set_tag("semflow.student", s.name)
        preview = table[["id", "source", "original", "revised", "j", "d_j", "tokens_regenerated"]]
        return metrics, {"scrg": preview}

    return run_stage(key(teacher, generation, scrg, generate_teacher, init_student), run, body)
