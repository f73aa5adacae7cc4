"""The pydantic models that validate every preset in configs/, one module per section.

Usage::

    from semflow.config import load_config
    cfg = load_config("configs/default.yaml", overrides=["generation.max_new_tokens=64"])
    cfg.generation.max_new_tokens  # 64

Unknown keys and bad values fail with the dotted key path, e.g.
``generation.max_new_tokens: Input should be greater than 0``. Every section forbids extra keys, so a
typo in a preset is an error rather than a silently ignored setting. Every field has a description;
docs/configuration.md is generated from them (`python -m semflow.config.doc`).
"""

from semflow.config.base import ConfigError, Section
from semflow.config.cade import GENERATED_SLICES, CadeConfig
from semflow.config.data import (
    BuiltinPrompts,
    BuiltinSource,
    CorpusConfig,
    DataConfig,
    FileSource,
    HFSource,
    PromptSource,
    Source,
    SplitConfig,
)
from semflow.config.distill import METHODS, DistillConfig, ScrgConfig
from semflow.config.generation import GenerationConfig, SamplingConfig
from semflow.config.models import ModelConfig, StudentConfig, TinyModelConfig
from semflow.config.pipeline import PipelineConfig, apply_overrides, load_config, validate_config
from semflow.config.runtime import ExecutionConfig, RuntimeConfig
from semflow.config.sedsi import EdConfig, QueriesConfig, RehearsalConfig, SedsiConfig
from semflow.config.training import TrainerConfig

__all__ = [
    "GENERATED_SLICES", "METHODS", "BuiltinPrompts", "BuiltinSource", "CadeConfig", "ConfigError", "CorpusConfig",
    "DataConfig", "DistillConfig", "EdConfig", "ExecutionConfig", "FileSource", "GenerationConfig", "HFSource",
    "ModelConfig", "PipelineConfig", "PromptSource", "QueriesConfig", "RehearsalConfig", "RuntimeConfig",
    "SamplingConfig", "ScrgConfig", "Section", "SedsiConfig", "Source", "SplitConfig", "StudentConfig",
    "TinyModelConfig", "TrainerConfig", "apply_overrides", "load_config", "validate_config",
]
