"""`semflow resume` after a failure in stage k, and the GPU-pool stage flow, on the embedded Prefect API.

The server versions (SIGKILL during distillation, real workers on a GPU pool) are in tests/servers/.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from flows.pipeline import pipeline
from semflow.cli import app
from semflow.store import ArtifactStore
from tests.conftest import SMOKE

STAGES = ["prepare_data", "generate_teacher", "init_student", "scrg_correct", "distill_student", "describe_documents",
          "cade_align", "sedsi_index"]


def task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


def parents(tracking_uri: str) -> dict[str, object]:
    """MLflow parent runs by their Prefect flow-run id."""
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.data.tags["prefect.flow_run_id"]: r for r in client.search_runs(experiments)
            if "prefect.flow_run_id" in r.data.tags}


def test_semflow_resume_finishes_a_run_that_failed_in_cade_align(workdir, monkeypatch):
    import components.cade.report as cade  # the stage aligns through report.align_and_report

    overrides = [f"runtime.workdir={workdir}"]
    uri = f"sqlite:///{workdir}/mlflow.db"

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure in cade_align")

    monkeypatch.setattr(cade, "align", broken)
    state = pipeline(str(SMOKE), overrides, return_state=True)
    assert state.is_failed() and "injected failure in cade_align" in str(state.message)
    failed_id = str(state.state_details.flow_run_id)
    monkeypatch.undo()

    result = CliRunner().invoke(app, ["resume", failed_id, "-c", str(SMOKE)])
    assert result.exit_code == 0, result.output
    assert failed_id in " ".join(result.output.split())

    runs = parents(uri)
    failed_parent = runs[failed_id]
    assert failed_parent.info.status == "FAILED"
    [(resumed_id, resumed_parent)] = [(i, r) for i, r in runs.items()
                                      if r.data.tags.get("semflow.resumed_from_flow_run") == failed_id]
    states = task_states(resumed_id)
    # sedsi_index does not read cade_align: it finished in the failed run, beside the failing stage
    assert states == {**{s: "Cached" for s in STAGES}, "cade_align": "Completed"}
    for stage in [s for s in STAGES if s != "cade_align"]:  # the resumed parent links the runs that made the cached artifacts
        assert resumed_parent.data.tags[f"semflow.{stage}.run_id"] == failed_parent.data.tags[f"semflow.{stage}.run_id"]
    assert resumed_parent.info.status == "FINISHED"


def test_resume_names_what_it_cannot_find(workdir):
    runner = CliRunner()
    missing = runner.invoke(app, ["resume", "00000000-0000-0000-0000-000000000000", "-c", str(SMOKE)])
    assert missing.exit_code == 1 and "no flow run 00000000-0000-0000-0000-000000000000" in " ".join(missing.output.split())
    bad = runner.invoke(app, ["resume", "not-a-uuid", "-c", str(SMOKE)])
    assert bad.exit_code == 1 and "is not a flow run id" in " ".join(bad.output.split())


def test_a_pool_dispatched_stage_runs_the_same_task_and_returns_its_manifest(workdir, monkeypatch):
    """`execution.gpu_stages: pool` without a worker: run_deployment is replaced by a call of the stage
    flow in this process, with the JSON parameters a worker would receive."""
    import json
    from types import SimpleNamespace

    import prefect.deployments

    from flows.stage import run_stage_flow

    calls = []

    def fake_run_deployment(name, parameters, timeout):
        calls.append(name)
        parameters = json.loads(json.dumps(parameters))  # what crosses the API
        state = run_stage_flow(**parameters, return_state=True)
        return SimpleNamespace(id=state.state_details.flow_run_id, name=parameters["stage_name"], state=state)

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    pooled = pipeline(str(SMOKE), [f"runtime.workdir={workdir / 'pool'}", "execution.gpu_stages=pool"])
    pooled_stages = ("generate_teacher", "scrg_correct", "distill_student", "describe_documents", "sedsi_index")
    assert sorted(calls) == sorted(f"semflow-stage/{s}" for s in pooled_stages)
    inline = pipeline(str(SMOKE), [f"runtime.workdir={workdir / 'inline'}"])
    for stage in STAGES:
        assert pooled["stages"][stage]["key"] == inline["stages"][stage]["key"], stage
    assert pooled["stages"]["generate_teacher"]["state"] == "Completed"
    again = pipeline(str(SMOKE), [f"runtime.workdir={workdir / 'pool'}", "execution.gpu_stages=pool"])
    assert {again["stages"][s]["state"] for s in STAGES} == {"Cached"}  # read back from the stage flow runs

    # a worker whose checkout computes another cache key refuses to run the stage
    def mismatched_run_deployment(name, parameters, timeout):
        return fake_run_deployment(name, {**parameters, "key": "0" * 20}, timeout)

    monkeypatch.setattr(prefect.deployments, "run_deployment", mismatched_run_deployment)
    with pytest.raises(Exception, match="generate_teacher: .* ended Failed: .*this worker computes cache key"):
        pipeline(str(SMOKE), [f"runtime.workdir={workdir / 'other'}", "execution.gpu_stages=pool"])

    # a stage whose flow run fails names the run and its state
    def failing_run_deployment(name, parameters, timeout):
        from prefect.states import Failed

        return SimpleNamespace(id="f00", name="sad-run", state=Failed(message="worker lost"))

    monkeypatch.setattr(prefect.deployments, "run_deployment", failing_run_deployment)
    with pytest.raises(Exception, match="generate_teacher: flow run sad-run .* ended Failed: worker lost"):
        pipeline(str(SMOKE), [f"runtime.workdir={workdir / 'fail'}", "execution.gpu_stages=pool"])
    assert not ArtifactStore(workdir / "fail" / "artifacts").keys("generate_teacher")


def test_the_stage_flow_rejects_unknown_stages_and_inputs(workdir):
    from flows.stage import run_stage_flow

    with pytest.raises(ValueError, match="unknown pool stage 'cade_align'"):
        run_stage_flow.fn("cade_align", {}, {"artifact_root": "x", "tracking_uri": "y", "experiment_id": "0"})
    with pytest.raises(ValueError, match=r"generate_teacher: unexpected inputs \['colour'\]"):
        run_stage_flow.fn("generate_teacher", {"colour": 1},
                          {"artifact_root": "x", "tracking_uri": "y", "experiment_id": "0"})
    # the pipeline sends its MLflow URI redacted; a worker without its own MLFLOW_TRACKING_URI cannot use it
    with pytest.raises(ValueError, match="has a password .* set MLFLOW_TRACKING_URI in this worker"):
        run_stage_flow.fn("generate_teacher", {}, {"artifact_root": "x", "tracking_uri": "postgresql://u:***@h/db",
                                                   "experiment_id": "0"})
