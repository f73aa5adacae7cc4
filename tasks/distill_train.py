"""The distillation training job of the `distill_student` stage: in this process, or as N torchrun ranks
(`execution.distill_processes`), each loading the models and training on its share of every global
batch (components.training.Trainer); rank 0 writes the outputs and logs the steps.

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m tasks.distill_train JOB.json
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from semflow.config import DistillConfig, GenerationConfig, ModelConfig, ScrgConfig
from semflow.store import StageManifest
from tasks._stage import load_stage_model, read_output

SUMMARY = ".train_summary.json"


class TrainJob(BaseModel):
    """Everything the training needs, as JSON: it runs in this process, or in each rank of a torchrun job.
    No tracking URI (it may hold a password): ranks inherit MLFLOW_TRACKING_URI, which stage_run set."""

    teacher: ModelConfig
    generation: GenerationConfig
    scrg: ScrgConfig
    distill: DistillConfig
    responses: StageManifest
    student: StageManifest
    scrg_table: StageManifest | None
    model_cache: str | None
    ckpt_dir: str
    out: str
    mlflow_run_id: str


class TrainSummary(BaseModel):
    metrics: dict[str, float]
    chunker: str
    teacher: str
    student: str
    processes: int = 1


def train_and_save(job: TrainJob) -> TrainSummary:
    """Load both models, distil, and (rank 0) write student/, f_sub, history and eval tables into job.out.
    Under torch.distributed every rank calls this; the Trainer splits each global batch across them."""
    import torch.distributed as dist
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from components.distill.recipe import distil
    from components.models import load_model

    rank = dist.get_rank() if dist.is_initialized() else 0
    out = Path(job.out)
    table = read_output(job.responses, "responses")
    scrg_table = read_output(job.scrg_table, "scrg") if job.scrg_table is not None else None
    t = load_model(job.teacher, job.model_cache)
    s = load_stage_model(job.student, "student", job.teacher, job.model_cache)
    client = MlflowClient()  # the stage's tracking URI (this process's, or inherited by a rank)

    def log_step(step: int, metrics: dict[str, float]) -> None:  # rank 0 only (the Trainer's rule)
        stamp = int(time.time() * 1000)
        client.log_batch(job.mlflow_run_id, metrics=[Metric(f"train/{k}", v, stamp, step) for k, v in metrics.items()])

    # init_student already generated the starting student's test answers (same model, prompts, settings)
    before = None
    if "eval" in job.student.outputs:
        before = read_output(job.student, "eval")["student_healed"].fillna("").tolist()
    result = distil(t, s, table, scrg_table, job.distill, job.generation, job.scrg, job.ckpt_dir, on_log=log_step,
                    before=before, progress=rank == 0)
    summary = TrainSummary(metrics=result.metrics, chunker=result.chunker, teacher=t.name, student=s.name,
                           processes=dist.get_world_size() if dist.is_initialized() else 1)
    if rank == 0:
        result.save(s, out)
    return summary


def write_card(student_dir: Path, method: str, summary: TrainSummary) -> None:
    """semflow.json beside the weights: method, models, metrics (written after the folder's digest)."""
    import json

    (student_dir / "semflow.json").write_text(json.dumps(
        {"method": method, "teacher": summary.teacher, "student_init": summary.student, "metrics": summary.metrics},
        indent=2))


def train_data_parallel(job: TrainJob, processes: int, work: Path) -> TrainSummary:
    """train_and_save in `processes` torchrun ranks (gloo on CPU, nccl with one GPU per rank); rank 0's
    summary read back."""
    from semflow.launch import torchrun

    work.mkdir(parents=True, exist_ok=True)
    spec = work / "train_job.json"
    spec.write_text(job.model_dump_json())
    try:
        returncode = torchrun(__name__, spec, processes)
    finally:
        spec.unlink(missing_ok=True)
    summary_file = Path(job.out) / SUMMARY
    if returncode != 0 or not summary_file.is_file():
        raise RuntimeError(f"distillation on {processes} processes failed (torchrun exit code {returncode}; "
                           "the ranks' output is above); rerun to resume from its last checkpoint")
    summary = TrainSummary.model_validate_json(summary_file.read_text())
    summary_file.unlink()  # not an output of the stage
    return summary


def _rank_main(spec: str) -> None:
    """One rank of train_data_parallel (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    import torch
    import torch.distributed as dist

    job = TrainJob.model_validate_json(Path(spec).read_text())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if job.teacher.device != "cpu" and torch.cuda.is_available():
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise RuntimeError(f"rank {local_rank} needs GPU {local_rank} but {visible} are visible "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
                               "give the worker one GPU per process (prefect.yaml job variables)")
        torch.cuda.set_device(local_rank)
        job = job.model_copy(update={"teacher": job.teacher.model_copy(update={"device": f"cuda:{local_rank}"})})
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    try:
        summary = train_and_save(job)
        if dist.get_rank() == 0:
            (Path(job.out) / SUMMARY).write_text(summary.model_dump_json())
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _rank_main(sys.argv[1])
