"""Cache keys for pipeline stages: stage config + upstream content digests + component source.

Prefect's TASK_SOURCE hashes only the task function's text, so an edit in components/ would keep a
stale cache hit. The key here hashes every .py file of the packages a stage runs, and the upstream
stages' *content* digests (not their keys), so a data-prep code change that yields the same data
leaves generation cached. Per-run values (MLflow parent run id, paths) stay out of the key.

Example::

    key = stage_key("generate_teacher", {"generation": cfg.generation}, {"prompts": digest},
                    ["components.generation", "components.models", "tasks.generate_teacher"])
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

KEY_LENGTH = 20


@lru_cache(maxsize=None)
def source_digest(modules: tuple[str, ...]) -> str:
    """sha256 over the source files of the given modules or packages (recursively, sorted)."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"cache key: module {name!r} not found")
        if spec.submodule_search_locations:  # a package: every .py file below it
            root = Path(next(iter(spec.submodule_search_locations)))
            files = sorted(root.rglob("*.py"))
        else:
            root, files = Path(spec.origin).parent, [Path(spec.origin)]
        for file in files:
            digest.update(f"{name}:{file.relative_to(root).as_posix()}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def stage_key(stage: str, config: dict[str, Any], upstream: dict[str, str], modules: list[str] | tuple[str, ...]) -> str:
    payload = json.dumps(
        {
            "stage": stage,
            "config": _plain(config),
            "upstream": dict(sorted(upstream.items())),
            "source": source_digest(tuple(modules)),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:KEY_LENGTH]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes: a local input file named by path in a config enters cache keys by content."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def combine_digests(digests: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(digests.items()))).encode()).hexdigest()
