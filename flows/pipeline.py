"""The semflow pipeline as one Prefect flow: data prep -> teacher generation -> student initialisation
-> SCRG -> distillation -> CADE alignment of the corpora and of the generated text -> SE-DSI indexing
of the documents (the distilled student as backbone; `sedsi.enabled: false` leaves it out).

Run it::

    semflow run --config configs/default.yaml --set generation.max_new_tokens=64

Each stage is a cached Prefect task that returns a small manifest (artifact URI, digest, MLflow run
id, metrics). An unchanged rerun comes back Cached for every stage and loads no model; a changed
setting reruns its stage and everything downstream. SCRG runs only for the MGSR method (the baselines
train on teacher responses or references).

With `execution.gpu_stages: pool` the heavy stages run as flow runs of their own deployments on the GPU
work pool (flows/stage.py); everything else, and the bookkeeping, stays in this flow.
`semflow resume` reruns a failed or killed flow run with its own parameters: its finished stages come
back Cached and training continues from its last checkpoint.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.tasks import Task

from flows.stage import dispatch, run_cached, stage_inputs
from semflow.config import ExecutionConfig, load_config
from semflow.runtime import RunContext, prepare_environment
from semflow.store import StageManifest
from semflow.tracking import finish_parent, start_parent
from tasks.cade_align import cade_align
from tasks.distill_student import distill_student
from tasks.generate_teacher import generate_teacher
from tasks.init_student import init_student
from tasks.prepare_data import prepare_data
from tasks.scrg_correct import scrg_correct
from tasks.sedsi_index import sedsi_index


@flow(name="semflow-pipeline")
def pipeline(
    config_path: str = "configs/default.yaml", overrides: list[str] | None = None, resume_of: str | None = None
) -> dict[str, Any]:
    """`resume_of`: the flow run this one resumes (set by `semflow resume`); recorded on the MLflow parent."""
    cfg = load_config(config_path, overrides or [])
    prepare_environment(cfg.runtime)
    run = start_parent(cfg, config_path, str(flow_run.id) if flow_run.id else None, resume_of)
    stages = StageRecorder(run, cfg.execution)
    try:
        data = stages.run(prepare_data, cfg.data)
        responses = stages.run(generate_teacher, cfg.teacher, cfg.generation, data)
        initial = stages.run(init_student, cfg.teacher, cfg.student, cfg.generation, cfg.distill, responses)
        revised = None
        if cfg.distill.method == "mgsr":
            revised = stages.run(
                scrg_correct, cfg.teacher, cfg.generation, cfg.scrg, responses, initial, cfg.distill.on_long_prompt
            )
        student = stages.run(
            distill_student, cfg.teacher, cfg.generation, cfg.distill, responses, initial, revised
        )
        stages.run(cade_align, cfg.cade, data, responses, student)
        if cfg.sedsi.enabled:
            backbone = student if cfg.sedsi.backbone is None else None
            stages.run(sedsi_index, cfg.teacher, cfg.generation, cfg.sedsi, data, backbone)
    except BaseException:
        finish_parent(run, "FAILED", stages.tags())
        raise
    finish_parent(run, "FINISHED", stages.tags())
    return {"mlflow_run_id": run.parent_run_id, "stages": stages.summary}


class StageRecorder:
    """Runs stage tasks (inline, or on the GPU pool) and remembers, per stage, whether it ran or came from
    the cache."""

    def __init__(self, run: RunContext, execution: ExecutionConfig | None = None):
        self.run_ctx = run
        self.execution = execution or ExecutionConfig()
        self.summary: dict[str, dict[str, Any]] = {}

    def run(self, stage_task: Task, *inputs: Any) -> StageManifest:
        named = stage_inputs(stage_task, inputs)
        if self.execution.gpu_stages == "pool" and stage_task.name in self.execution.pool_stages:
            manifest, state_name = dispatch(stage_task.name, named, self.run_ctx, self.execution.stage_timeout_s)
        else:
            manifest, state_name = run_cached(stage_task, self.run_ctx, **named)
        return self._record(manifest, state_name)

    def _record(self, manifest: StageManifest, state_name: str) -> StageManifest:
        self.summary[manifest.stage] = {
            "state": state_name,
            "key": manifest.key,
            "uri": manifest.uri,
            "mlflow_run_id": manifest.mlflow_run_id,
            "metrics": manifest.metrics,
        }
        return manifest

    def tags(self) -> dict[str, str]:
        tags = {}
        for stage, info in self.summary.items():
            tags[f"semflow.{stage}.state"] = info["state"]
            tags[f"semflow.{stage}.run_id"] = info["mlflow_run_id"] or ""
            tags[f"semflow.{stage}.artifact"] = info["uri"]
        return tags
