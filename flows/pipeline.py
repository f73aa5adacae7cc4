"""The semflow pipeline as one Prefect flow: data prep -> teacher generation -> student initialisation
-> SCRG -> distillation -> CADE alignment of the corpora and of the generated text -> SE-DSI indexing
of the documents (the distilled student as backbone; `sedsi.enabled: false` leaves it out).

Run it::

    semflow run --config configs/default.yaml --set generation.max_new_tokens=64

Each stage is a cached Prefect task that returns a small manifest (artifact URI, digest, MLflow run
id, metrics). An unchanged rerun comes back Cached for every stage and loads no model; a changed
setting reruns its stage and everything downstream. SCRG runs only for the MGSR method (the baselines
train on teacher responses or references).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.tasks import Task

from semflow.config import load_config
from semflow.runtime import RunContext, prepare_environment
from semflow.store import ArtifactStore, StageManifest
from semflow.tracking import finish_parent, start_parent
from tasks.cade_align import cade_align
from tasks.distill_student import distill_student
from tasks.generate_teacher import generate_teacher
from tasks.init_student import init_student
from tasks.prepare_data import prepare_data
from tasks.scrg_correct import scrg_correct
from tasks.sedsi_index import sedsi_index


@flow(name="semflow-pipeline")
def pipeline(config_path: str = "configs/default.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = load_config(config_path, overrides or [])
    prepare_environment(cfg.runtime)
    run = start_parent(cfg, config_path, str(flow_run.id) if flow_run.id else None)
    stages = StageRecorder(run)
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
    """Runs stage tasks and remembers, per stage, whether it ran or came from the cache."""

    def __init__(self, run: RunContext):
        self.run_ctx = run
        self.summary: dict[str, dict[str, Any]] = {}

    def run(self, stage_task: Task, *inputs: Any) -> StageManifest:
        state = stage_task(*inputs, run=self.run_ctx, return_state=True)
        manifest: StageManifest = state.result()
        if ArtifactStore(self.run_ctx.artifact_root).manifest(manifest.stage, manifest.key) is None:
            # Prefect remembered a result whose artifact has since been deleted: build it again.
            get_run_logger().warning("%s: cached artifact %s is gone; recomputing", manifest.stage, manifest.uri)
            state = stage_task.with_options(refresh_cache=True)(*inputs, run=self.run_ctx, return_state=True)
            manifest = state.result()
        self.summary[manifest.stage] = {
            "state": state.name,
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
