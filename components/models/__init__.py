"""Model specs, the safetensors cache for GGUF models, tiny random models and student initialisation.

Usage::

    from semflow.config import ModelConfig
    from components.models import load_model, prune_student

    teacher = load_model(ModelConfig(spec="smollm2-135m-instruct"))   # GGUF -> cached safetensors
    student = prune_student(teacher.model, keep_layers=[0, 2, 4])
"""

from components.models.loading import LoadedModel, ModelError, load_model, pick_device
from components.models.spec import ResolvedSpec, resolve_spec
from components.models.student import build_student, check_shared_vocab, prune_student

__all__ = [
    "LoadedModel",
    "build_student",
    "ModelError",
    "ResolvedSpec",
    "check_shared_vocab",
    "load_model",
    "pick_device",
    "prune_student",
    "resolve_spec",
]
