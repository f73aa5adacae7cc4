"""The import rules of the layers (ARCHITECTURE.md): components/ is plain Python/torch/gensim code that a
notebook can use, tasks/ are thin Prefect tasks, flows/ wire them. Checked on every import statement,
those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from semflow.caching import REPO_ROOT

RULES = {
    "components": {"prefect", "mlflow", "tasks", "flows", "semflow.cli", "semflow.tracking", "semflow.store"},
    "tasks": {"flows", "semflow.cli"},
    "semflow": {"flows", "tasks"},  # the library below the CLI; semflow/cli starts flows (EXEMPT)
}
EXEMPT = {"semflow/cli"}


def imported(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_bytes())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def violations(layer: str) -> list[str]:
    found = []
    for file in sorted((REPO_ROOT / layer).rglob("*.py")):
        if any(file.relative_to(REPO_ROOT).as_posix().startswith(e + "/") for e in EXEMPT):
            continue
        for name in imported(file):
            for banned in RULES[layer]:
                if name == banned or name.startswith(banned + "."):
                    found.append(f"{file.relative_to(REPO_ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_follow_the_rules(layer):
    assert violations(layer) == []


def test_the_check_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    import mlflow.tracking\n    from prefect import task\n")
    assert imported(bad) == {"mlflow.tracking", "prefect"}
