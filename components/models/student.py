"""Initialise a student from its teacher by layer selection, and check that two models share a vocabulary.

Example::

    student = prune_student(teacher, keep_layers=[0, 10, 20, 29])   # a 4-layer copy of a 30-layer model
    check_shared_vocab(teacher_tok, student_tok, "smollm2-135m-instruct", "./my-student")

Pruning copies the token embeddings, the kept decoder layers (renumbered in order), the final norm and
the LM head; every other weight of the student is the teacher's. It works for decoder-only models whose
layers live under `model.layers.N` (Llama, Mistral, Qwen2, SmolLM, ...), and fails clearly otherwise.
"""

from __future__ import annotations

import copy
import re

import time

from transformers import PreTrainedModel

from components.models.loading import LoadedModel, load_model

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


class VocabularyMismatch(ValueError):
    """Teacher and student tokenizers differ: token-level distillation would compare unrelated ids."""


def default_keep_layers(num_layers: int) -> list[int]:
    """Every other layer, always keeping the last one (it feeds the final norm and head)."""
    keep = list(range(0, num_layers, 2))
    if keep[-1] != num_layers - 1:
        keep.append(num_layers - 1)
    return keep


def prune_student(teacher: PreTrainedModel, keep_layers: list[int] | None = None) -> PreTrainedModel:
    n = teacher.config.num_hidden_layers
    keep = list(keep_layers) if keep_layers is not None else default_keep_layers(n)
    bad = [i for i in keep if not 0 <= i < n]
    if bad:
        raise ValueError(f"keep_layers {bad} out of range: the teacher has layers 0..{n - 1}")
    if sorted(set(keep)) != keep:
        raise ValueError(f"keep_layers must be strictly increasing without repeats, got {keep}")

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):  # per-layer attention types (e.g. sliding windows)
        config.layer_types = [config.layer_types[i] for i in keep]
    student = type(teacher)(config)

    renumber = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, tensor in teacher.state_dict().items():
        match = _LAYER_KEY.match(key)
        if match is None:
            state[key] = tensor
        elif int(match[1]) in renumber:
            state[f"model.layers.{renumber[int(match[1])]}.{match[2]}"] = tensor
    if not any(_LAYER_KEY.match(k) for k in state):
        raise ValueError(
            f"cannot prune {type(teacher).__name__}: no weights under model.layers.N"
        )
    student.load_state_dict(state, strict=True)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.to(device=teacher.device, dtype=teacher.dtype).eval()


def check_shared_vocab(teacher_tokenizer, student_tokenizer, teacher_name: str, student_name: str) -> None:
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab == s_vocab:
        return
    only_t = sorted(set(t_vocab) - set(s_vocab))[:5]
    only_s = sorted(set(s_vocab) - set(t_vocab))[:5]
    moved = sorted(k for k in set(t_vocab) & set(s_vocab) if t_vocab[k] != s_vocab[k])[:5]
    raise VocabularyMismatch(
        f"teacher {teacher_name!r} ({len(t_vocab)} tokens) and student {student_name!r} "
        f"({len(s_vocab)} tokens) do not share a tokenizer vocabulary; "
        f"only in teacher: {only_t}, only in student: {only_s}, different ids: {moved}"
    )


def build_student(cfg, teacher: LoadedModel, cache_root=None) -> LoadedModel:
    """The student a `StudentConfig` describes: pruned from the loaded teacher, or loaded from its own
    spec; either way it must share the teacher's vocabulary (checked before any work)."""
    start = time.perf_counter()
    if cfg.init == "prune":
        model = prune_student(teacher.model, cfg.keep_layers)
        student = LoadedModel(f"{teacher.name}-pruned-{model.config.num_hidden_layers}l", model,
                              teacher.tokenizer, 0.0, "pruned")
    else:
        student = load_model(cfg.model, cache_root)
    check_shared_vocab(teacher.tokenizer, student.tokenizer, teacher.name, student.name)
    student.load_seconds = time.perf_counter() - start
    return student
