"""Initialise a student from its teacher by layer selection, and check that two models share a vocabulary.

Example::

    student = prune_student(teacher, keep_layers=[0, 10, 20, 29])   # a 4-layer copy of a 30-layer model
    check_shared_vocab(teacher_tok, student_tok, "smollm2-135m-instruct", "./my-student")
    sim = layer_similarity(teacher, calibration_batches)            # cosines/angles between layer inputs
    select_layers(sim, keep=24, method="block_influence")           # the 24 layers that change most

Which layers to keep (`student.select`):
- every_other: every other layer and the last (the old default);
- evenly: `layers` indices spread evenly over the depth, first and last included;
- block_influence: ShortGPT (Men et al. 2024, "ShortGPT: Layers in Large Language Models are More
  Redundant Than You Expect"): BI_i = 1 - E_t cos(x_i, x_{i+1}) with x_i the hidden state entering
  layer i, over calibration tokens; the layers with the lowest BI are dropped;
- angular: Gromov et al. 2024 ("The Unreasonable Ineffectiveness of the Deeper Layers"): drop the
  contiguous block of n = L - layers layers starting at l* = argmin_l d(x_l, x_{l+n}), with
  d = arccos(cos) / pi averaged over calibration tokens.
Both rankings read the teacher's hidden states on calibration sequences (the teacher's own training
answers), through forward hooks on the decoder layers (the model's `hidden_states` output applies the
final norm to its last entry).

Pruning copies the token embeddings, the kept decoder layers (renumbered in order), the final norm and
the LM head; every other weight of the student is the teacher's. It works for decoder-only models whose
layers live under `model.layers.N` (Llama, Mistral, Qwen2, SmolLM, ...), and fails clearly otherwise.
"""

from __future__ import annotations

import copy
import math
import re
import time

import numpy as np
import torch
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


def evenly_spaced_layers(num_layers: int, keep: int) -> list[int]:
    """`keep` layer indices spread evenly over 0..num_layers-1, first and last included."""
    if not 1 <= keep <= num_layers:
        raise ValueError(f"cannot keep {keep} of {num_layers} layers")
    if keep == 1:
        return [num_layers - 1]
    return sorted({round(i * (num_layers - 1) / (keep - 1)) for i in range(keep)})


@torch.no_grad()
def layer_similarity(model: PreTrainedModel, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Mean cosine and mean angular distance (arccos(cos) / pi) between the hidden states at every pair
    of layer boundaries, over the real (unmasked) tokens of `batches` ([B, T] input_ids, attention_mask).
    Boundary i is the state entering layer i; boundary L the last layer's output (before the final norm).
    Returns {"cos": [L+1, L+1], "angle": [L+1, L+1]}."""
    layers = model.model.layers
    n = len(layers)
    captured: list[torch.Tensor] = []

    def pre(_module, args, kwargs):
        captured.append((args[0] if args else kwargs["hidden_states"]).float())

    def post(_module, _args, output):
        captured.append((output if torch.is_tensor(output) else output[0]).float())

    handles = [layer.register_forward_pre_hook(pre, with_kwargs=True) for layer in layers]
    handles.append(layers[-1].register_forward_hook(post))
    cos_sum = np.zeros((n + 1, n + 1))
    angle_sum = np.zeros((n + 1, n + 1))
    count = 0
    try:
        model.eval()
        for ids, mask in batches:
            captured.clear()
            model.model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
            real = mask.to(model.device).bool()
            states = torch.nn.functional.normalize(torch.stack([h[real] for h in captured]), dim=-1)  # [n+1, tok, H]
            for i in range(n + 1):
                c = (states[i][None] * states).sum(-1).clamp(-1.0, 1.0)  # [n+1, tok]
                cos_sum[i] += c.sum(-1).double().cpu().numpy()
                angle_sum[i] += (torch.arccos(c) / math.pi).sum(-1).double().cpu().numpy()
            count += int(real.sum())
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise ValueError("layer selection needs calibration tokens; got none")
    return {"cos": cos_sum / count, "angle": angle_sum / count}


def select_layers(similarity: dict[str, np.ndarray] | None, num_layers: int, keep: int, method: str) -> list[int]:
    """The teacher layers a `keep`-layer student keeps under `method` (module docstring); `similarity`
    from layer_similarity (needed by block_influence and angular)."""
    if method == "every_other":
        return default_keep_layers(num_layers)
    if not 1 <= keep <= num_layers:
        raise ValueError(f"student.layers={keep}: the teacher has {num_layers} layers")
    if method == "evenly":
        return evenly_spaced_layers(num_layers, keep)
    if similarity is None:
        raise ValueError(f"layer selection {method!r} needs calibration data")
    if method == "block_influence":
        influence = 1.0 - np.array([similarity["cos"][i, i + 1] for i in range(num_layers)])
        return sorted(np.argsort(-influence, kind="stable")[:keep].tolist())
    if method == "angular":
        drop = num_layers - keep
        if drop == 0:
            return list(range(num_layers))
        start = min(range(num_layers - drop + 1), key=lambda l: similarity["angle"][l, l + drop])
        return [i for i in range(num_layers) if not start <= i < start + drop]
    raise ValueError(f"unknown layer selection {method!r}")


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


def build_student(cfg, teacher: LoadedModel, cache_root=None,
                  calibration: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> LoadedModel:
    """The student a `StudentConfig` describes: pruned from the loaded teacher (layers from
    `keep_layers`, or chosen by `select` among `layers` using the teacher's hidden states on
    `calibration` batches), or loaded from its own spec; either way it must share the teacher's
    vocabulary (checked before any work). The kept layers are in `student.kept_layers`."""
    start = time.perf_counter()
    kept = None
    if cfg.init == "prune":
        n = teacher.model.config.num_hidden_layers
        kept = cfg.keep_layers
        if kept is None:
            ranked = cfg.select in ("block_influence", "angular")
            similarity = layer_similarity(teacher.model, calibration or []) if ranked else None
            kept = select_layers(similarity, n, cfg.layers or n, cfg.select)
        model = prune_student(teacher.model, kept)
        student = LoadedModel(f"{teacher.name}-pruned-{model.config.num_hidden_layers}l", model,
                              teacher.tokenizer, 0.0, "pruned")
    else:
        student = load_model(cfg.model, cache_root)
    check_shared_vocab(teacher.tokenizer, student.tokenizer, teacher.name, student.name)
    student.load_seconds = time.perf_counter() - start
    student.kept_layers = list(kept) if kept is not None else None
    return student
