"""What a run would do: each enabled stage with its cache key and whether the store already holds it,
computed from the declared DAG (semflow.dag) and the stages' own key functions, without running or
loading anything. `semflow stages`, `semflow run --dry-run` and `--only` read it.

Usage::

    for step in plan(cfg):
        step.stage.name, step.key, step.manifest is not None   # key None: an upstream is not built yet
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from semflow.config import PipelineConfig
from semflow.dag import Stage, enabled
from semflow.runtime import artifact_root
from semflow.store import ArtifactStore, StageManifest


@dataclass
class Planned:
    stage: Stage
    key: str | None  # None while an upstream stage it reads has no artifact yet
    manifest: StageManifest | None  # the artifact already in the store, if any


def key_function(stage: Stage):
    return importlib.import_module(stage.task_module).key


def stage_inputs(stage: Stage, cfg: PipelineConfig, manifests: dict[str, Any]) -> dict[str, Any]:
    """The task's inputs by name: its config sections, then each upstream stage's manifest (or future),
    None for an upstream this config disables or does not read."""
    reads = set(stage.reads(cfg))
    inputs: dict[str, Any] = {section: getattr(cfg, section) for section in stage.config}
    for upstream in stage.upstream:
        inputs[upstream] = manifests.get(upstream) if upstream in reads else None
    return inputs


def plan(cfg: PipelineConfig) -> list[Planned]:
    store = ArtifactStore(artifact_root(cfg.runtime))
    steps: list[Planned] = []
    known: dict[str, StageManifest] = {}
    for stage in enabled(cfg):
        if any(u not in known for u in stage.reads(cfg)):
            steps.append(Planned(stage, None, None))
            continue
        key = key_function(stage)(**stage_inputs(stage, cfg, known)).key
        manifest = store.manifest(stage.name, key)
        if manifest is not None:
            known[stage.name] = manifest
        steps.append(Planned(stage, key, manifest))
    return steps
