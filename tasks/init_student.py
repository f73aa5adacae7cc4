"""Stage 3: the student that SCRG and distillation start from: pruned from the teacher (or loaded from
its own spec; the vocabularies must match), then healed by a short SFT warm-up on the teacher's
responses (`student.warmup`; null skips it). Checkpoints resume like distillation's."""

from __future__ import annotations

from pathlib import Path

import mlflow

from semflow.caching import stage_key
from semflow.config import DistillConfig, GenerationConfig, ModelConfig, StudentConfig
from semflow.runtime import RunContext
from semflow.store import ArtifactStore, OutputRef, StageManifest
from tasks._stage import cached_stage, digest_dir, output_path, run_stage

STAGE = "init_student"
MODULES = ("components.distill", "components.generation", "components.models", "tasks.init_student", "tasks._stage")


def cache_key(teacher: ModelConfig, student: StudentConfig, generation: GenerationConfig, distill: DistillConfig,
              responses: StageManifest) -> str:
    config = {"teacher": teacher, "student": student,
              # what the warm-up reads from elsewhere: prompt rendering, sequence limits, eval length
              "prompting": {"system_prompt": generation.system_prompt, "max_prompt_tokens": generation.max_prompt_tokens},
              "limits": {"max_seq_tokens": distill.max_seq_tokens, "on_long_prompt": distill.on_long_prompt,
                         "chunk_size": distill.chunk_size, "eval_max_new_tokens": distill.eval_max_new_tokens}}
    return stage_key(STAGE, config, {"responses": responses.output("responses").digest}, MODULES)


@cached_stage(STAGE, cache_key)
def init_student(teacher: ModelConfig, student: StudentConfig, generation: GenerationConfig, distill: DistillConfig,
                 responses: StageManifest, run: RunContext) -> StageManifest:
    from components.data import read_dataset, write_dataset
    from components.distill.recipe import heal_student
    from components.models import build_student, load_model

    key = cache_key(teacher, student, generation, distill, responses)
    work = ArtifactStore(run.artifact_root).work_dir(STAGE, key)

    def body(tmp: Path):
        t = load_model(teacher, run.model_cache)
        s = build_student(student, t, run.model_cache)
        metrics = {"student_layers": float(s.model.config.num_hidden_layers),
                   "student_parameters_m": sum(p.numel() for p in s.model.parameters()) / 1e6,
                   "teacher_parameters_m": sum(p.numel() for p in t.model.parameters()) / 1e6}
        outputs, previews = {}, {}
        if student.warmup is not None:
            table = read_dataset(output_path(responses, "responses"))
            log_step = lambda step, m: mlflow.log_metrics({f"warmup/{k}": v for k, v in m.items()}, step=step)  # noqa: E731
            healed = heal_student(t, s, table, generation, student.warmup, work / "checkpoints", distill, on_log=log_step)
            metrics.update(healed.metrics)
            info = write_dataset(healed.samples, tmp / "eval.parquet")
            outputs["eval"] = OutputRef(path="eval.parquet", digest=info.digest, rows=info.rows)
            previews["eval"] = healed.samples
        s.model.save_pretrained(tmp / "student")
        s.tokenizer.save_pretrained(tmp / "student")
        outputs["student"] = OutputRef(path="student", digest=digest_dir(tmp / "student"))
        mlflow.set_tag("semflow.student", s.name)
        return outputs, metrics, previews

    params = {"teacher": teacher, "student": student, "upstream.responses": responses.output("responses").digest}
    return run_stage(STAGE, key, run, params, body)
