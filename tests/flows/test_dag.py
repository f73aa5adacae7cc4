"""The DAG declared once (semflow/dag.py): every task's signature matches its entry, the flow and
`semflow stages` read the same declaration, independent stages really run at the same time, and
--until/--only select stages from it."""

from __future__ import annotations

import importlib
import inspect
import threading

import pytest

from flows.pipeline import pipeline
from semflow.config import load_config
from semflow.dag import POOL_STAGES, STAGES, diagram, stage
from semflow.plan import plan
from tests.conftest import REPO, SMOKE


@pytest.mark.parametrize("declared", STAGES, ids=lambda s: s.name)
def test_each_task_takes_exactly_its_declared_inputs_by_name(declared):
    module = importlib.import_module(declared.task_module)
    task = getattr(module, declared.name)
    assert task.name == declared.name
    assert tuple(inspect.signature(task.fn).parameters) == (*declared.parameters(), "run")
    assert tuple(inspect.signature(module.key).parameters) == declared.parameters()
    for upstream in declared.upstream:
        assert stage(upstream).name == upstream


def test_pool_stages_are_the_heavy_stages_and_the_docs_show_the_dag():
    assert POOL_STAGES == tuple(s.name for s in STAGES if s.gpu)
    assert "cade_align" not in POOL_STAGES and "describe_documents" in POOL_STAGES
    for doc in (REPO / "README.md", REPO / "docs" / "pipeline.md"):
        assert diagram() in doc.read_text(), f"{doc.name}: the DAG diagram is stale; paste semflow.dag.diagram()"


@pytest.fixture(scope="module")
def shared_workdir(tmp_path_factory, prefect_server):
    return tmp_path_factory.mktemp("dag") / "work"


def overlap_probe(monkeypatch, timeout: float) -> threading.Barrier:
    """describe_documents and init_student each wait at one barrier before their model work: neither can
    pass unless both are running at the same time (otherwise the first one's wait times out)."""
    import components.distill.recipe as recipe
    import components.sedsi as sedsi

    barrier = threading.Barrier(2, timeout=timeout)
    heal, describe = recipe.heal_student, sedsi.generate_descriptions

    def waiting(fn):
        def wrapped(*args, **kwargs):
            barrier.wait()
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(recipe, "heal_student", waiting(heal))
    monkeypatch.setattr(sedsi, "generate_descriptions", waiting(describe))
    return barrier


def test_independent_stages_run_at_the_same_time_and_stages_reads_the_same_dag(shared_workdir, monkeypatch):
    overrides = [f"runtime.workdir={shared_workdir}"]
    overlap_probe(monkeypatch, timeout=60)
    result = pipeline(str(SMOKE), overrides)
    assert {info["state"] for info in result["stages"].values()} == {"Completed"}
    steps = plan(load_config(SMOKE, overrides))
    assert [p.stage.name for p in steps] == list(result["stages"])
    assert all(p.key == result["stages"][p.stage.name]["key"] and p.manifest is not None for p in steps)


def test_sequential_execution_does_not_overlap(tmp_path, prefect_server, monkeypatch):
    overlap_probe(monkeypatch, timeout=5)
    with pytest.raises(threading.BrokenBarrierError):
        pipeline(str(SMOKE), [f"runtime.workdir={tmp_path / 'w'}", "execution.parallel=false"])


def test_until_and_only_select_from_the_declared_dag(shared_workdir, tmp_path):
    fresh = [f"runtime.workdir={tmp_path / 'w'}"]
    partial = pipeline(str(SMOKE), fresh, until=["init_student"])
    assert list(partial["stages"]) == ["prepare_data", "generate_teacher", "init_student"]
    with pytest.raises(ValueError, match="upstream stage.*scrg_correct.*have no artifact yet"):
        pipeline(str(SMOKE), fresh, only=["distill_student"])
    with pytest.raises(ValueError, match="stage 'sedsi_index' is not part of this config's run"):
        pipeline(str(SMOKE), [*fresh, "sedsi.enabled=false"], until=["sedsi_index"])

    # on the full run's store: only cade_align runs, its upstream read from the artifacts
    built = [f"runtime.workdir={shared_workdir}", "cade.vector_size=8"]
    only = pipeline(str(SMOKE), built, only=["cade_align"])
    assert {name: info["state"] for name, info in only["stages"].items()} == {"cade_align": "Completed"}
