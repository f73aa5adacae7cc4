"""Stage 4: distil the teacher into the student (MGSR or a baseline), evaluate before and after, and
register the student in MLflow. Training checkpoints live beside the artifact
(`<artifact_root>/distill_student/.<key>.work/`), so a rerun after a crash resumes from the last one."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from semflow.caching import stage_key
from semflow.config import DistillConfig, GenerationConfig, ModelConfig
from semflow.runtime import RunContext
from semflow.store import ArtifactStore, OutputRef, StageManifest
from tasks._stage import cached_stage, digest_dir, load_student, output_path, register_model, run_stage

STAGE = "distill_student"
MODULES = ("components.distill", "components.generation", "components.models", "tasks.distill_student", "tasks._stage")
REGISTERED_MODEL = "semflow-student"


def cache_key(teacher: ModelConfig, generation: GenerationConfig, distill: DistillConfig, responses: StageManifest,
              student: StageManifest, scrg: StageManifest | None) -> str:
    upstream = {"responses": responses.output("responses").digest, "student": student.output("student").digest}
    if distill.method == "mgsr":  # only MGSR trains on the SCRG output
        if scrg is None:
            raise ValueError("distill.method mgsr needs the scrg_correct stage's manifest")
        upstream["scrg"] = scrg.output("scrg").digest
    config = {"teacher": teacher, "distill": distill,
              "prompting": {"system_prompt": generation.system_prompt, "max_prompt_tokens": generation.max_prompt_tokens}}
    return stage_key(STAGE, config, upstream, MODULES)


@cached_stage(STAGE, cache_key)
def distill_student(teacher: ModelConfig, generation: GenerationConfig, distill: DistillConfig, responses: StageManifest,
                    student: StageManifest, scrg: StageManifest | None, run: RunContext) -> StageManifest:
    import pandas as pd
    from safetensors.torch import save_model

    from components.data import read_dataset, write_dataset
    from components.distill.recipe import distil
    from components.models import load_model

    key = cache_key(teacher, generation, distill, responses, student, scrg)
    work = ArtifactStore(run.artifact_root).work_dir(STAGE, key)

    def body(tmp: Path):
        table = read_dataset(output_path(responses, "responses"))
        scrg_table = read_dataset(output_path(scrg, "scrg")) if distill.method == "mgsr" else None
        t = load_model(teacher, run.model_cache)
        s = load_student(student, t, teacher, run.model_cache)
        log_step = lambda step, metrics: mlflow.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)  # noqa: E731
        # init_student already generated the starting student's test answers (same model, prompts, settings)
        before = None
        if "eval" in student.outputs:
            before = read_dataset(output_path(student, "eval"))["student_healed"].fillna("").tolist()
        result = distil(t, s, table, scrg_table, distill, generation, work / "checkpoints", on_log=log_step,
                        before=before)

        s.model.save_pretrained(tmp / "student")
        s.tokenizer.save_pretrained(tmp / "student")
        if result.objective is not None and result.objective.band is not None:  # MGSR: f_sub
            save_model(result.objective, str(tmp / "f_sub.safetensors"))
        history = pd.DataFrame(result.train.history)
        h_info = write_dataset(history, tmp / "history.parquet")
        e_info = write_dataset(result.samples, tmp / "eval.parquet")
        weights = digest_dir(tmp / "student")
        (tmp / "student" / "semflow.json").write_text(json.dumps(
            {"method": distill.method, "teacher": t.name, "student_init": s.name, "metrics": result.metrics}, indent=2))
        metrics = {**result.metrics}
        mlflow.set_tags({"semflow.method": distill.method, "semflow.span_chunker": result.chunker,
                         "semflow.student": s.name})
        mlflow.log_artifacts(str(tmp / "student"), "student")
        tags = {"method": distill.method, **{k: f"{v:.4f}" for k, v in metrics.items() if k.startswith("rougeL")}}
        version = register_model(REGISTERED_MODEL, "Students distilled by semflow", mlflow.active_run().info.run_id,
                                 "student", tags)
        metrics["registered_version"] = float(version)
        outputs = {
            "student": OutputRef(path="student", digest=weights),
            "history": OutputRef(path="history.parquet", digest=h_info.digest, rows=h_info.rows),
            "eval": OutputRef(path="eval.parquet", digest=e_info.digest, rows=e_info.rows),
        }
        return outputs, metrics, {"eval": result.samples}

    params = {"teacher": teacher, "distill": distill, "upstream.responses": responses.output("responses").digest,
              "upstream.student": student.output("student").digest}
    return run_stage(STAGE, key, run, params, body)
