"""How many decoder layers a model spec has, read from its config or GGUF header: no weights loaded.

Usage::

    num_layers(ModelConfig(spec="smollm2-135m-instruct"))   # 30, from the GGUF's llama.block_count

The pipeline checks `student.keep_layers` against it before any stage runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.models.spec import resolve_spec
from semflow.config import ModelConfig


def num_layers(cfg: ModelConfig) -> int | None:
    """The model's decoder layer count, or None where it cannot be read without loading (a hub id not in
    the local cache)."""
    resolved = resolve_spec(cfg.spec)
    if resolved.kind == "tiny":
        return cfg.tiny.num_hidden_layers
    if resolved.kind == "local":
        config = json.loads((Path(resolved.location) / "config.json").read_text())
        return config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers")
    if resolved.kind == "gguf":
        from gguf import GGUFReader  # memory-maps the file: the header is read, the tensors are not

        reader = GGUFReader(str(Path(resolved.location) / resolved.gguf_file))
        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        field = reader.fields.get(f"{arch}.block_count")
        return int(field.parts[-1][0]) if field is not None else None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(resolved.location, local_files_only=True).num_hidden_layers
    except (OSError, ValueError, AttributeError):
        return None
