"""Cache keys for pipeline stages: what a stage reads (config values, upstream content digests) plus the
source of every project module its task runs, found from the imports themselves.

Prefect's TASK_SOURCE hashes only the task function's text, so an edit in components/ would keep a
stale cache hit, and a hand-kept module list goes stale the day someone adds an import. Here the task
module is compiled, every `import`/`from ... import` of a project package (components, semflow, tasks,
flows) in its bytecode is followed, at any depth and inside functions too (heavy imports are lazy), and
every file reached is hashed. Third-party code is not hashed: its versions are pinned in pyproject.toml.

The upstream stages enter by their *content* digests (not their keys), so a data-prep code change that
yields the same data leaves generation cached. Per-run values (MLflow parent run id, paths) stay out.

Example::

    key = StageKey(stage="generate_teacher", config={"teacher": teacher, "generation": generation},
                   upstream={"prompts": prepare_data.output("prompts").digest})
    key.key        # 20 hex digits: config + upstream + source of tasks.generate_teacher's import closure
    key.params()   # the same values, flattened, as the stage's MLflow params
"""

from __future__ import annotations

import dis
import hashlib
import json
from functools import lru_cache
from collections.abc import Iterator
from pathlib import Path
from types import CodeType
from typing import Any

from pydantic import BaseModel, ConfigDict

KEY_LENGTH = 20
PROJECT_PACKAGES = ("components", "semflow", "tasks", "flows")
REPO_ROOT = Path(__file__).resolve().parent.parent


def _module_file(name: str, root: Path) -> Path | None:
    """The file of project module `name` under `root` (a package's __init__.py), or None if absent."""
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _import_statements(code: CodeType) -> Iterator[tuple[str, int, tuple[str, ...]]]:
    """(module, level, names) of every import in `code` and the functions and classes nested in it.

    Read from the compiled bytecode (IMPORT_NAME with its level and fromlist constants), not from `ast`:
    CPython 3.11's AST objects are not safe to build in two threads at once ("AST constructor recursion
    depth mismatch"), and stages, Prefect and the libraries they load all run in threads here."""
    instructions = list(dis.get_instructions(code))
    for k, instruction in enumerate(instructions):
        if instruction.opname == "IMPORT_NAME" and k >= 2:
            level, fromlist = instructions[k - 2].argval, instructions[k - 1].argval
            yield instruction.argval, int(level or 0), tuple(fromlist or ())
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _import_statements(const)


def _imports(name: str, file: Path, root: Path) -> set[str]:
    """Project modules that `file` (module `name`) imports, anywhere in its body."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for module, level, names in _import_statements(compile(file.read_bytes(), str(file), "exec")):
        if level:  # relative: from . import x / from ..a import b
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - level + 1])
            module = f"{base}.{module}" if module else base
        # `from pkg import sub` may name a submodule as well as an attribute
        for candidate in (module, *(f"{module}.{alias}" for alias in names if alias != "*")):
            if candidate.split(".")[0] not in PROJECT_PACKAGES:
                continue
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = candidate.split(".")
            for k in range(1, len(parts) + 1):
                prefix = ".".join(parts[:k])
                if _module_file(prefix, root) is not None:
                    found.add(prefix)
    return found


def import_closure(module: str, root: Path = REPO_ROOT) -> dict[str, Path]:
    """Every project module `module` imports, transitively (itself included), with its file under `root`."""
    first = _module_file(module, root)
    if first is None:
        raise ValueError(f"cache key: project module {module!r} not found under {root}")
    files, todo = {}, [module]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        file = _module_file(name, root)
        if file is None:
            continue
        files[name] = file
        todo.extend(_imports(name, file, root) - files.keys())
    return files


def closure_digest(module: str, root: Path = REPO_ROOT) -> str:
    """sha256 over the names and bytes of every file in `module`'s import closure."""
    digest = hashlib.sha256()
    for name, file in sorted(import_closure(module, root).items()):
        digest.update(f"{name}\0".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@lru_cache(maxsize=None)
def _cached_closure_digest(module: str) -> str:
    return closure_digest(module)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class StageKey(BaseModel):
    """What one stage's artifact depends on. Its cache key and its MLflow params derive from this one
    object, so the two cannot drift apart."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    stage: str
    config: dict[str, Any]  # the config values the stage reads
    upstream: dict[str, str]  # content digests of the inputs it reads
    module: str | None = None  # the module whose import closure is hashed (default: tasks.<stage>)

    @property
    def source(self) -> str:
        return _cached_closure_digest(self.module or f"tasks.{self.stage}")

    @property
    def key(self) -> str:
        payload = json.dumps(
            {"stage": self.stage, "config": _plain(self.config), "upstream": dict(sorted(self.upstream.items())),
             "source": self.source},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:KEY_LENGTH]

    def params(self) -> dict[str, Any]:
        """The key's inputs as flat MLflow params: `section.field` values and `upstream.<name>` digests."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                flat[prefix] = value

        walk("", _plain(self.config))
        flat.update({f"upstream.{k}": v for k, v in sorted(self.upstream.items())})
        flat["source"] = self.source[:KEY_LENGTH]
        return flat


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes: a local input file named by path in a config enters cache keys by content."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def combine_digests(digests: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(digests.items()))).encode()).hexdigest()
