"""docs/configuration.md, generated from the pydantic models (one source for every default and its
description; tests/components/test_config_doc.py fails when the page is stale).

    python -m semflow.config.doc > docs/configuration.md
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from semflow.config.pipeline import PipelineConfig

HEADER = """# Configuration reference

Generated from the pydantic models in `semflow/config/` by `python -m semflow.config.doc`: do not edit by
hand (a test fails when this page and the models disagree). Every key can be set in a preset
(`configs/*.yaml`) or on the command line with `--set section.key=value` (the value is parsed as YAML).
Unknown keys are errors that name the key path.
"""


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The config models an annotation holds (a model, an optional model, a union of sources, a list of models)."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _models(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (typing.Union, types.UnionType, list):
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return []


def _type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in get_args(annotation))
    if origin is list:
        return f"list[{', '.join(_type(a) for a in get_args(annotation))}]"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "*required*"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return f"{len(value)} entries"
    return f"`{json.dumps(value)}`"


def _section(prefix: str, model: type[BaseModel], out: list[str], seen: set[tuple[str, type]]) -> None:
    if (prefix, model) in seen:
        return
    seen.add((prefix, model))
    doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    out += ["", f"## `{prefix}` ({model.__name__})" if prefix else f"## top level ({model.__name__})", ""]
    if doc:
        out += [doc, ""]
    out += ["| key | type | default | description |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{key}` | {_type(field.annotation)} | {_default(field)} | {description} |")
        nested += [(key, m) for m in _models(field.annotation)]
    for key, sub in nested:
        _section(key, sub, out, seen)


def render() -> str:
    out = [HEADER.rstrip()]
    _section("", PipelineConfig, out, set())
    return "\n".join(out) + "\n"


def undocumented(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[str]:
    """Key paths of fields without a description (there should be none)."""
    missing = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if not field.description:
            missing.append(key)
        for sub in _models(field.annotation):
            missing += undocumented(sub, key)
    return sorted(set(missing))


if __name__ == "__main__":
    print(render(), end="")
