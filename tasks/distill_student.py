"""Stage 4: distil the teacher into the student (MGSR or a baseline), evaluate before and after, and
register the student in MLflow. Training checkpoints live beside the artifact
(`<artifact_root>/distill_student/.<key>.work/`), so a rerun after a crash resumes from the last one.

With `execution.distill_processes: N > 1` training is data-parallel: this module runs as N torchrun
ranks (`python -m torch.distributed.run ... -m tasks.distill_student JOB.json`), each loading the models
and training on its share of every global batch; rank 0 writes the outputs and logs the steps."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from pydantic import BaseModel

from semflow.caching import stage_key
from semflow.config import DistillConfig, GenerationConfig, ModelConfig
from semflow.runtime import RunContext
from semflow.store import ArtifactStore, OutputRef, StageManifest
from tasks._stage import cached_stage, digest_dir, load_student, output_path, register_model, run_stage

STAGE = "distill_student"
MODULES = ("components.distill", "components.generation", "components.models", "tasks.distill_student", "tasks._stage")
REGISTERED_MODEL = "semflow-student"
log = logging.getLogger(__name__)


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
    from components.data import read_dataset

    key = cache_key(teacher, generation, distill, responses, student, scrg)
    work = ArtifactStore(run.artifact_root).work_dir(STAGE, key)

    def body(tmp: Path):
        job = TrainJob(teacher=teacher, generation=generation, distill=distill, responses=responses, student=student,
                       scrg=scrg, model_cache=run.model_cache, ckpt_dir=str(work / "checkpoints"), out=str(tmp),
                       mlflow_run_id=mlflow.active_run().info.run_id)
        if run.distill_processes > 1:
            summary = train_data_parallel(job, run.distill_processes, work)
        else:
            summary = train_and_save(job)

        weights = digest_dir(tmp / "student")
        (tmp / "student" / "semflow.json").write_text(json.dumps(
            {"method": distill.method, "teacher": summary.teacher, "student_init": summary.student,
             "metrics": summary.metrics}, indent=2))
        metrics = {**summary.metrics}
        mlflow.set_tags({"semflow.method": distill.method, "semflow.span_chunker": summary.chunker,
                         "semflow.student": summary.student, "semflow.train_processes": str(summary.processes)})
        mlflow.log_artifacts(str(tmp / "student"), "student")
        tags = {"method": distill.method, **{k: f"{v:.4f}" for k, v in metrics.items() if k.startswith("rougeL")}}
        version = register_model(REGISTERED_MODEL, "Students distilled by semflow", mlflow.active_run().info.run_id,
                                 "student", tags)
        metrics["registered_version"] = float(version)
        outputs = {"student": OutputRef(path="student", digest=weights), **summary.outputs}
        return outputs, metrics, {"eval": read_dataset(tmp / "eval.parquet")}

    params = {"teacher": teacher, "distill": distill, "upstream.responses": responses.output("responses").digest,
              "upstream.student": student.output("student").digest}
    return run_stage(STAGE, key, run, params, body)


# ------------------------------------------------------------------------------------ training
class TrainJob(BaseModel):
    """Everything the training needs, as JSON: it runs in this process, or in each rank of a torchrun job.
    No tracking URI (it may hold a password): ranks inherit MLFLOW_TRACKING_URI, which stage_run set."""

    teacher: ModelConfig
    generation: GenerationConfig
    distill: DistillConfig
    responses: StageManifest
    student: StageManifest
    scrg: StageManifest | None
    model_cache: str | None
    ckpt_dir: str
    out: str
    mlflow_run_id: str


class TrainSummary(BaseModel):
    metrics: dict[str, float]
    outputs: dict[str, OutputRef]
    chunker: str
    teacher: str
    student: str
    processes: int = 1


def train_and_save(job: TrainJob) -> TrainSummary:
    """Load both models, distil, and (rank 0) write student/, f_sub, history and eval tables into job.out.
    Under torch.distributed every rank calls this; the Trainer splits each global batch across them."""
    import pandas as pd
    import torch.distributed as dist
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    from safetensors.torch import save_model

    from components.data import read_dataset, write_dataset
    from components.distill.recipe import distil
    from components.models import load_model

    rank = dist.get_rank() if dist.is_initialized() else 0
    out = Path(job.out)
    table = read_dataset(output_path(job.responses, "responses"))
    scrg_table = read_dataset(output_path(job.scrg, "scrg")) if job.distill.method == "mgsr" else None
    t = load_model(job.teacher, job.model_cache)
    s = load_student(job.student, t, job.teacher, job.model_cache)
    client = MlflowClient()  # the stage's tracking URI (this process's, or inherited by a rank)

    def log_step(step: int, metrics: dict[str, float]) -> None:  # rank 0 only (the Trainer's rule)
        stamp = int(time.time() * 1000)
        client.log_batch(job.mlflow_run_id, metrics=[Metric(f"train/{k}", v, stamp, step) for k, v in metrics.items()])

    # init_student already generated the starting student's test answers (same model, prompts, settings)
    before = None
    if "eval" in job.student.outputs:
        before = read_dataset(output_path(job.student, "eval"))["student_healed"].fillna("").tolist()
    result = distil(t, s, table, scrg_table, job.distill, job.generation, job.ckpt_dir, on_log=log_step,
                    before=before, progress=rank == 0)
    summary = TrainSummary(metrics=result.metrics, outputs={}, chunker=result.chunker, teacher=t.name, student=s.name,
                           processes=dist.get_world_size() if dist.is_initialized() else 1)
    if rank != 0:
        return summary
    s.model.save_pretrained(out / "student")
    s.tokenizer.save_pretrained(out / "student")
    if result.objective is not None and result.objective.band is not None:  # MGSR: f_sub
        save_model(result.objective, str(out / "f_sub.safetensors"))
    h_info = write_dataset(pd.DataFrame(result.train.history), out / "history.parquet")
    e_info = write_dataset(result.samples, out / "eval.parquet")
    summary.outputs = {
        "history": OutputRef(path="history.parquet", digest=h_info.digest, rows=h_info.rows),
        "eval": OutputRef(path="eval.parquet", digest=e_info.digest, rows=e_info.rows),
    }
    return summary


def train_data_parallel(job: TrainJob, processes: int, work: Path) -> TrainSummary:
    """Run train_and_save in `processes` ranks under torchrun (gloo on CPU, nccl with one GPU per rank) and
    read rank 0's summary back. The ranks' output goes to this process's terminal.

    torchrun starts each rank in a session of its own, so killing this process's group would not reach
    them: torchrun gets SIGTERM when this process exits for any reason (PR_SET_PDEATHSIG, even on SIGKILL)
    or when the stage fails, and it stops its ranks. No rank outlives the stage to race a resumed run."""
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "train_job.json"
    spec.write_text(job.model_dump_json())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "tasks.distill_student", str(spec)]
    log.info("distillation on %d processes: %s", processes, " ".join(command))
    agent = subprocess.Popen(command, preexec_fn=_terminate_with_parent)
    try:
        returncode = agent.wait()
    finally:
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
        spec.unlink(missing_ok=True)
    summary_file = Path(job.out) / SUMMARY
    if returncode != 0 or not summary_file.is_file():
        raise RuntimeError(f"distillation on {processes} processes failed (torchrun exit code {returncode}; "
                           "the ranks' output is above); rerun to resume from its last checkpoint")
    summary = TrainSummary.model_validate_json(summary_file.read_text())
    summary_file.unlink()  # not an output of the stage
    return summary


def _terminate_with_parent() -> None:
    """In the torchrun child, before exec: the kernel sends it SIGTERM when its parent dies (Linux)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


SUMMARY = ".train_summary.json"


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
