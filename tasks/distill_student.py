"""Stage distill_student: distil the teacher into the student (MGSR or a baseline), evaluate before and
after, and register the student in MLflow. Training checkpoints live beside the artifact
(`<artifact_root>/distill_student/.<key>.work/`), so a rerun after a crash resumes from the last one;
`execution.distill_processes: N` trains as N torchrun ranks (tasks/distill_train.py)."""

from __future__ import annotations

import mlflow

from semflow.caching import StageKey
from semflow.config import DistillConfig, GenerationConfig, ModelConfig, ScrgConfig
from semflow.runtime import RunContext
from semflow.store import StageManifest
from semflow.tracking import register_model
from tasks._stage import Outputs, cached_stage, run_stage, work_dir

REGISTERED_MODEL = "semflow-student"


def key(teacher: ModelConfig, generation: GenerationConfig, scrg: ScrgConfig, distill: DistillConfig,
        generate_teacher: StageManifest, init_student: StageManifest, scrg_correct: StageManifest | None) -> StageKey:
    upstream = {"responses": generate_teacher.output("responses").digest,
                "student": init_student.output("student").digest}
    config = {"teacher": teacher, "distill": distill,
              "prompting": {"system_prompt": generation.system_prompt, "max_prompt_tokens": generation.max_prompt_tokens,
                            "on_long_prompt": generation.on_long_prompt}}
    if distill.reads_scrg_table:  # offline/mixed MGSR trains on the SCRG table
        if scrg_correct is None:
            raise ValueError(f"mgsr with scrg_schedule {distill.scrg_schedule} needs the scrg_correct stage's manifest")
        upstream["scrg"] = scrg_correct.output("scrg").digest
    if distill.samples_online:
        config["scrg"] = scrg  # online SCRG samples and corrects with these settings
    return StageKey(stage="distill_student", config=config, upstream=upstream)


@cached_stage(key)
def distill_student(teacher: ModelConfig, generation: GenerationConfig, scrg: ScrgConfig, distill: DistillConfig,
                    generate_teacher: StageManifest, init_student: StageManifest, scrg_correct: StageManifest | None,
                    run: RunContext) -> StageManifest:
    from tasks.distill_train import TrainJob, train_and_save, train_data_parallel, write_card

    stage_key = key(teacher, generation, scrg, distill, generate_teacher, init_student, scrg_correct)
    work = work_dir(stage_key, run)

    def body(out: Outputs):
        job = TrainJob(teacher=teacher, generation=generation, scrg=scrg, distill=distill, responses=generate_teacher,
                       student=init_student, scrg_table=scrg_correct if distill.reads_scrg_table else None,
                       model_cache=run.model_cache, ckpt_dir=str(work / "checkpoints"), out=str(out.root),
                       mlflow_run_id=mlflow.active_run().info.run_id)
        procs = run.distill_processes
        summary = train_data_parallel(job, procs, work) if procs > 1 else train_and_save(job)
        metrics = dict(summary.metrics)
        student_dir = out.folder("student")  # digest before semflow.json: the weights, not the summary
        write_card(student_dir, distill.method, summary)
        out.written_table("history")
        samples = out.written_table("eval")
        mlflow.set_tags({"semflow.method": distill.method, "semflow.span_chunker": summary.chunker,
                         "semflow.student": summary.student, "semflow.train_processes": str(summary.processes)})
        mlflow.log_artifacts(str(student_dir), "student")
        tags = {"method": distill.method, **{k: f"{v:.4f}" for k, v in metrics.items() if k.startswith("rougeL")}}
        metrics["registered_version"] = float(register_model(
            REGISTERED_MODEL, "Students distilled by semflow", mlflow.active_run().info.run_id, "student", tags))
        return metrics, {"eval": samples}

    return run_stage(stage_key, run, body)
