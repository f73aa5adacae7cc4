"""Cache keys derived from each stage task's import graph: an edit anywhere in that graph changes the
key, an edit outside it does not, and the MLflow params come from the same object as the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from semflow.caching import REPO_ROOT, StageKey, closure_digest, import_closure
from semflow.config import GenerationConfig


def project_copy(tmp_path: Path) -> Path:
    """The project packages copied to tmp_path, to edit without touching the checkout."""
    for package in ("components", "semflow", "tasks", "flows"):
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def append(root: Path, module: str, line: str) -> None:
    file = root.joinpath(*module.split("."))
    file = file / "__init__.py" if file.is_dir() else file.with_suffix(".py")
    file.write_text(file.read_text() + f"\n{line}\n")


def test_an_edit_deep_in_a_stages_import_graph_changes_its_key(tmp_path):
    root = project_copy(tmp_path)
    closure = import_closure("tasks.sedsi_index", root)
    # reached only through a lazy import inside a function: components.sedsi.index -> training.trainer
    assert "components.training.trainer" in closure
    # reached only through another package's module: components.sedsi.training -> distill.losses
    assert "components.distill.losses" in closure
    before = closure_digest("tasks.sedsi_index", root)
    append(root, "components.distill.losses", "EDITED = True")
    assert closure_digest("tasks.sedsi_index", root) != before
    before = closure_digest("tasks.sedsi_index", root)
    append(root, "components.training.trainer", "# a comment counts too: the key follows the bytes")
    assert closure_digest("tasks.sedsi_index", root) != before


def test_an_edit_outside_the_graph_leaves_the_key_alone(tmp_path):
    root = project_copy(tmp_path)
    assert "components.cade.analysis" not in import_closure("tasks.generate_teacher", root)
    assert "semflow.cli" not in import_closure("tasks.cade_align", root)
    teacher, cade = closure_digest("tasks.generate_teacher", root), closure_digest("tasks.cade_align", root)
    append(root, "components.cade.analysis", "EDITED = True")
    assert closure_digest("tasks.generate_teacher", root) == teacher
    assert closure_digest("tasks.cade_align", root) != cade
    append(root, "semflow.cli.sedsi", "EDITED = True")
    assert closure_digest("tasks.generate_teacher", root) == teacher


def test_import_closure_follows_relative_and_nested_imports(tmp_path):
    pkg = tmp_path / "components" / "fake"
    pkg.mkdir(parents=True)
    (tmp_path / "components" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    import json\n    return g\n")
    (pkg / "b.py").write_text("from ..fake import c\ng = 1\n")
    (pkg / "c.py").write_text("import numpy\n")
    (pkg / "unused.py").write_text("x = 1\n")
    assert sorted(import_closure("components.fake.a", tmp_path)) == [
        "components", "components.fake", "components.fake.a", "components.fake.b", "components.fake.c"]
    with pytest.raises(ValueError, match="'components.fake.nope' not found"):
        import_closure("components.fake.nope", tmp_path)


def test_params_and_key_come_from_the_same_values():
    def key(**overrides) -> StageKey:
        fields = {"config": {"generation": GenerationConfig()}, "upstream": {"prompts": "abc"}, **overrides}
        return StageKey(stage="generate_teacher", **fields)

    base = key()
    assert base.key == key().key and len(base.key) == 20
    variants = [key(config={"generation": GenerationConfig(max_new_tokens=3)}), key(upstream={"prompts": "abd"}),
                key(module="tasks.cade_align")]
    for other in variants:  # every change of the key's inputs shows in the params, and changes the key
        assert other.key != base.key and other.params() != base.params()
    params = base.params()
    assert params["generation.max_new_tokens"] == 64 and params["upstream.prompts"] == "abc"
    assert params["source"] == base.source[:20]
