"""The whole preset: one section per stage family, and loading with `--set` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from semflow.config.base import ConfigError, Section
from semflow.config.cade import CadeConfig
from semflow.config.data import DataConfig
from semflow.config.distill import DistillConfig, ScrgConfig
from semflow.config.generation import GenerationConfig
from semflow.config.models import ModelConfig, StudentConfig
from semflow.config.runtime import ExecutionConfig, RuntimeConfig
from semflow.config.sedsi import SedsiConfig


class PipelineConfig(Section):
    """A preset (configs/*.yaml)."""

    name: str = Field("default", description="preset name; MLflow parent runs are called pipeline-<name>")
    data: DataConfig = Field(DataConfig(), description="prompts, documents, corpora")
    teacher: ModelConfig = Field(ModelConfig(), description="the teacher LLM (also writes the SE-DSI EDs)")
    student: StudentConfig = Field(StudentConfig(), description="how the student is built and healed")
    generation: GenerationConfig = Field(GenerationConfig(), description="teacher generation and prompt rendering")
    scrg: ScrgConfig = Field(ScrgConfig(), description="sequence correction and re-generation")
    distill: DistillConfig = Field(DistillConfig(), description="the distillation objective and its training")
    cade: CadeConfig = Field(CadeConfig(), description="corpus alignment")
    sedsi: SedsiConfig = Field(SedsiConfig(), description="generative retrieval")
    execution: ExecutionConfig = Field(ExecutionConfig(), description="where and how stages run")
    runtime: RuntimeConfig = Field(RuntimeConfig(), description="paths and stores")


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides; the value is parsed as YAML (`64` -> int, `[1, 2]` -> list)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--set {key.strip()}: value {raw!r} is not valid YAML ({problem})") from None
        _set_path(tree, key.strip(), value)
    return tree


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config {origin}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def validate_config(tree: dict[str, Any], origin: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file (e.g. configs/default.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if tree is None:
        # An empty preset would silently run every default (the 20-minute pipeline): say so instead.
        raise ConfigError(f"{path}: the config file is empty; write at least `name: ...` (every other key "
                          "has a default, see docs/configuration.md)")
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(tree).__name__}")
    apply_overrides(tree, overrides or [])
    return validate_config(tree, origin=str(path))
