"""The pipeline run the way a team runs it: deployments on Prefect and MLflow servers backed by
PostgreSQL, process workers on the CPU and GPU pools (tests/servers/conftest.py starts them all).

- the end-to-end deployment on the smoke config, heavy stages dispatched to the GPU pool;
- three runs at once, two with one config and one with another: all complete, every shared stage is
  computed once, no artifact is clobbered, no "database is locked" anywhere;
- a run SIGKILLed during distillation, finished by `semflow resume`: earlier stages Cached (Prefect's
  task-run states), training restarted from its last checkpoint, artifacts equal to an uninterrupted run;
- a deployment run failing in its last stage, resumed through its deployment;
- the MLflow UI in headless Chromium: parent run, nested stage runs, an artifact (screenshots).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from uuid import UUID

import pytest

from tests.conftest import REPO
from tests.servers.conftest import BIN, Services

pytestmark = [pytest.mark.servers, pytest.mark.timeout(1200)]

SMOKE = "configs/smoke.yaml"
STAGES = ["prepare_data", "generate_teacher", "init_student", "scrg_correct", "distill_student", "describe_documents",
          "cade_align", "sedsi_index"]
HEAVY = ["generate_teacher", "scrg_correct", "distill_student", "describe_documents", "sedsi_index"]


# -------------------------------------------------------------------------------------------- helpers
def start_pipeline(services: Services, overrides: list[str]):
    """Start the `semflow-pipeline/pipeline` deployment (a CPU-pool worker picks it up); do not wait."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: services.prefect_url}):
        return run_deployment("semflow-pipeline/pipeline", timeout=0,
                              parameters={"config_path": SMOKE, "overrides": overrides})


def wait_final(client, flow_run_id: UUID, services: Services, timeout: float = 900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(2)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout} s\n{services.log_text()[-6000:]}")


def assert_completed(run, services: Services) -> None:
    assert run.state.is_completed(), (
        f"{run.name} ended {run.state.name}: {run.state.message}\n{services.log_text()[-8000:]}")


def mlflow_parent(services: Services, flow_run_id) -> tuple[object, dict[str, list]]:
    """The MLflow parent run of a flow run, and its child runs by stage name."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(services.mlflow_url)
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(experiments, f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    assert len(parents) == 1, f"{len(parents)} MLflow parent runs for flow run {flow_run_id}"
    children: dict[str, list] = {}
    for child in client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"):
        children.setdefault(child.info.run_name, []).append(child)
    return parents[0], children


def task_states(client, flow_run_id) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}  # task run names are "<stage>-<suffix>"


def verify_artifacts(root: Path) -> list[str]:
    """Each complete artifact's outputs still hash to its manifest: nothing was clobbered. Returns the
    stage/key of every artifact checked."""
    from components.data import read_dataset
    from components.data.datasets import content_digest
    from semflow.store import StageManifest
    from semflow.store import digest_dir

    checked = []
    for manifest_file in sorted(root.glob("*/*/manifest.json")):
        manifest = StageManifest.model_validate_json(manifest_file.read_text())
        for name, ref in manifest.outputs.items():
            path = manifest_file.parent / ref.path
            if path.suffix == ".parquet":
                actual = content_digest(read_dataset(path))
            else:  # a folder; distillation adds semflow.json (run metrics) after hashing the weights
                actual = digest_dir(path) if not (path / "semflow.json").exists() else _digest_without(path)
            assert actual == ref.digest, f"{manifest.stage}/{manifest.key}: output {name} changed after completion"
        checked.append(f"{manifest.stage}/{manifest.key}")
    leftovers = [p.name for p in root.glob("*/.*") if ".tmp-" in p.name]
    assert not leftovers, f"temporary artifact folders left behind: {leftovers}"
    return checked


def _digest_without(path: Path) -> str:
    import shutil
    import tempfile

    from semflow.store import digest_dir

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "x"
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("semflow.json"))
        return digest_dir(copy)


# ---------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def pool_run(services, tmp_path_factory):
    """The end-to-end deployment on the smoke config with the heavy stages on the GPU pool, finished."""
    from prefect.client.orchestration import SyncPrefectClient

    work = tmp_path_factory.mktemp("pool-run") / "work"
    started = start_pipeline(services, [f"runtime.workdir={work}", "execution.gpu_stages=pool"])
    with SyncPrefectClient(services.prefect_url) as client:
        return wait_final(client, started.id, services)


def test_the_pipeline_deployment_runs_heavy_stages_on_the_gpu_pool(services, prefect_client, pool_run):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, LogFilter
    from prefect.client.schemas.filters import LogFilterFlowRunId

    run = pool_run
    assert_completed(run, services)
    assert run.work_pool_name == "semflow-cpu"

    subflows = prefect_client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
    assert sorted(r.name for r in subflows) == sorted(HEAVY)
    assert {r.work_pool_name for r in subflows} == {"semflow-gpu"}
    assert all(r.state.is_completed() for r in subflows)
    logs = prefect_client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in subflows])))
    assert sum("CUDA_VISIBLE_DEVICES=0" in log.message for log in logs) == len(HEAVY)  # the pool's job variable

    parent, children = mlflow_parent(services, run.id)
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(STAGES)
    assert all(len(runs) == 1 and runs[0].info.status == "FINISHED" for runs in children.values())
    # each stage's child run is the one the parent links, GPU-pool stages included
    for stage, runs in children.items():
        assert parent.data.tags[f"semflow.{stage}.run_id"] == runs[0].info.run_id


def test_concurrent_runs_complete_share_stages_and_clobber_nothing(services, prefect_client, tmp_path):
    work = tmp_path / "shared"
    config_a = [f"runtime.workdir={work}"]
    config_b = [f"runtime.workdir={work}", "generation.max_new_tokens=6"]
    started = [start_pipeline(services, o) for o in (config_a, config_a, config_b)]
    runs = [wait_final(prefect_client, s.id, services) for s in started]
    for run in runs:
        assert_completed(run, services)

    (pa, ca), (pa2, ca2), (pb, cb) = (mlflow_parent(services, r.id) for r in runs)
    for stage in STAGES[1:]:  # same config: each stage computed by exactly one of the two runs
        producers = ca.get(stage, []) + ca2.get(stage, [])
        assert len(producers) == 1, f"{stage} computed {len(producers)} times by two runs of one config"
        assert pa.data.tags[f"semflow.{stage}.run_id"] == pa2.data.tags[f"semflow.{stage}.run_id"]
        assert pa.data.tags[f"semflow.{stage}.artifact"] == pa2.data.tags[f"semflow.{stage}.artifact"]
    # prepare_data and describe_documents (documents + teacher only) are the same artifacts for all three
    # (computed by any one); the other config has its own downstream of the teacher's responses
    for shared in ("prepare_data", "describe_documents"):
        assert pa.data.tags[f"semflow.{shared}.run_id"] == pa2.data.tags[f"semflow.{shared}.run_id"]
        assert len(ca.get(shared, []) + ca2.get(shared, []) + cb.get(shared, [])) == 1, shared
        assert pb.data.tags[f"semflow.{shared}.artifact"] == pa.data.tags[f"semflow.{shared}.artifact"]
    assert pb.data.tags["semflow.generate_teacher.artifact"] != pa.data.tags["semflow.generate_teacher.artifact"]

    checked = verify_artifacts(work / "artifacts")
    assert len(checked) == 2 * len(STAGES) - 2  # prepare_data and describe_documents shared
    assert "database is locked" not in services.log_text()


def test_a_run_killed_during_distillation_is_finished_by_semflow_resume(services, prefect_client, tmp_path):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateName

    from components.training.trainer import STATE

    # long enough training that the kill lands between checkpoints; one CADE thread, as gensim's
    # multi-threaded training is not reproducible run to run
    long_training = ["distill.train.max_steps=120", "distill.train.checkpoint_every=20", "distill.train.eval_every=120",
                     "cade.workers=1"]
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    env = {**services.env, "PREFECT_HOME": str(tmp_path / "prefect-client")}

    def semflow(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "semflow"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=900, **kwargs)

    overrides = [f"runtime.workdir={killed_dir}", *long_training]
    proc = subprocess.Popen([str(BIN / "semflow"), "run", "-c", SMOKE, *sum((["--set", o] for o in overrides), [])],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    checkpoints = killed_dir / "artifacts" / "distill_student"
    deadline = time.monotonic() + 600
    while not any(checkpoints.glob(f".*.work/checkpoints/step-*/{STATE}")):
        assert proc.poll() is None, "the run ended before distillation wrote a checkpoint"
        assert time.monotonic() < deadline, "no distillation checkpoint within 600 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    complete = sorted(checkpoints.glob(f".*.work/checkpoints/step-*/{STATE}"))
    last_step = int(complete[-1].parent.name.removeprefix("step-"))
    assert 0 < last_step < 120
    assert not (checkpoints.exists() and any(p.is_dir() and not p.name.startswith(".") for p in checkpoints.iterdir()))

    killed = prefect_client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["semflow-pipeline"])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Running"]))))
    assert len(killed) == 1, [r.name for r in killed]
    killed_parent, killed_children = mlflow_parent(services, killed[0].id)

    # by default resume picks only Failed/Crashed runs and names the Running one; by id it resumes it
    refused = semflow("resume", "-c", SMOKE)
    assert refused.returncode == 1 and str(killed[0].id) in " ".join(refused.stderr.split()), refused.stderr
    resumed = semflow("resume", str(killed[0].id), "-c", SMOKE)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert str(killed[0].id) in " ".join(resumed.stdout.split())

    # Prefect: the killed run is marked Crashed; the new run's finished stages came back Cached
    assert prefect_client.read_flow_run(killed[0].id).state.name == "Crashed"
    new = prefect_client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["semflow-pipeline"])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Completed"]))))
    parent_of = {r.id: mlflow_parent(services, r.id) for r in new}
    (new_id, (new_parent, new_children)), = [(i, pc) for i, pc in parent_of.items()
                                              if pc[0].data.tags.get("semflow.resumed_from_flow_run") == str(killed[0].id)]
    states = task_states(prefect_client, new_id)
    for stage in STAGES[:4]:
        assert states[stage] == "Cached", states
    assert states["distill_student"] == "Completed", states
    # describe_documents ran beside the distillation branch: finished before the kill, or not yet
    assert states["describe_documents"] in ("Cached", "Completed"), states

    # MLflow: the killed runs are KILLED; the resumed parent links the runs that produced cached artifacts
    from mlflow.tracking import MlflowClient

    mlflow_client = MlflowClient(services.mlflow_url)
    assert mlflow_client.get_run(killed_parent.info.run_id).info.status == "KILLED"
    for stage in STAGES[:4]:
        assert new_parent.data.tags[f"semflow.{stage}.run_id"] == killed_children[stage][0].info.run_id
        assert stage not in new_children
    distill = new_children["distill_student"][0]
    assert distill.data.metrics["resumed_from_step"] == last_step

    # the same artifacts as a run that was never interrupted
    reference = semflow("run", "-c", SMOKE, *sum((["--set", o] for o in [f"runtime.workdir={reference_dir}",
                                                                          *long_training]), []))
    assert reference.returncode == 0, reference.stdout + reference.stderr
    from semflow.store import ArtifactStore

    got, want = ArtifactStore(killed_dir / "artifacts"), ArtifactStore(reference_dir / "artifacts")
    for stage in STAGES:
        [key] = [p.name for p in want.stage_dirs(stage)]
        assert got.manifest(stage, key) is not None, f"{stage}: the resumed run has no artifact {key}"
        assert_same_outputs(got, want, stage, key)


# what a resumed run may report differently: wall-clock fields and where it restarted from
TIMING = ("per_second", "seconds", "resumed_from")


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not any(t in k for t in TIMING)}
    return [_untimed(v) for v in value] if isinstance(value, list) else value


def assert_same_outputs(got, want, stage: str, key: str) -> None:
    """Every output of the artifact equals the uninterrupted run's: tables row for row, files byte for byte,
    JSON files up to their timing fields."""
    import pandas as pd

    from tasks._stage import output_path

    a, b = got.manifest(stage, key), want.manifest(stage, key)
    assert sorted(a.outputs) == sorted(b.outputs), stage
    for name, ref in b.outputs.items():
        if ref.path.endswith(".parquet"):
            frames = [pd.read_parquet(output_path(m, name)) for m in (a, b)]
            frames = [f.drop(columns=[c for c in f.columns if any(t in c for t in TIMING)]) for f in frames]
            pd.testing.assert_frame_equal(*frames, obj=f"{stage}/{name}")
            continue
        mine, theirs = output_path(a, name), output_path(b, name)
        files = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(mine) for p in mine.rglob("*") if p.is_file()), f"{stage}/{name}"
        for file in files:
            x, y = (mine / file).read_bytes(), (theirs / file).read_bytes()
            if file.suffix == ".json":
                x, y = _untimed(json.loads(x)), _untimed(json.loads(y))
            assert x == y, f"{stage}/{name}/{file} differs from the uninterrupted run"


def test_the_mlflow_ui_shows_the_parent_its_stage_runs_and_an_artifact(services, pool_run):
    from mlflow.tracking import MlflowClient

    from tests.servers.mlflow_browser import browse_pipeline_run

    parent, children = mlflow_parent(services, pool_run.id)
    out_dir = Path(os.environ.get("SEMFLOW_TEST_OUTPUT", REPO / "test-output")) / "mlflow-ui"
    seen = browse_pipeline_run(services.mlflow_url, parent.info.experiment_id, parent.info.run_id,
                               "distill_student", out_dir)
    assert sorted(seen["child_runs"]) == sorted(STAGES)
    assert seen["child_run_id"] == children["distill_student"][0].info.run_id
    assert json.loads(seen["artifact_text"])["stage"] == "distill_student"
    assert len(seen["screenshots"]) == 5 and all(Path(p).stat().st_size > 10_000 for p in seen["screenshots"])
    assert MlflowClient(services.mlflow_url).get_run(parent.info.run_id).info.status == "FINISHED"


def test_a_failed_deployment_run_is_resumed_through_its_deployment(services, prefect_client, tmp_path):
    """A run whose labelled-query file is missing fails right after data prep (checked before any model
    loads, not when sedsi_index starts); once the file exists, `semflow resume` (no id: the newest failed
    run) resubmits the run to its deployment and a worker finishes it."""
    import pandas as pd

    queries, qrels = tmp_path / "queries.jsonl", tmp_path / "qrels.jsonl"
    work = tmp_path / "work"
    overrides = [f"runtime.workdir={work}", f"sedsi.queries={{queries: {queries}, qrels: {qrels}}}"]
    failed = wait_final(prefect_client, start_pipeline(services, overrides).id, services)
    assert failed.state.is_failed(), failed.state
    failed_parent, failed_children = mlflow_parent(services, failed.id)
    assert sorted(failed_children) == ["prepare_data"]  # no model was loaded

    [documents] = (work / "artifacts" / "prepare_data").glob("*/documents.parquet")
    doc_ids = pd.read_parquet(documents)["doc_id"].astype(str).tolist()
    queries.write_text("".join(json.dumps({"qid": f"q{i}", "query": f"about document {d}"}) + "\n"
                               for i, d in enumerate(doc_ids[:2])))
    qrels.write_text("".join(json.dumps({"qid": f"q{i}", "doc_id": d, "relevance": 1}) + "\n"
                             for i, d in enumerate(doc_ids[:2])))

    env = {**services.env, "PREFECT_HOME": str(tmp_path / "prefect-client")}
    resumed = subprocess.run([str(BIN / "semflow"), "resume", "-c", SMOKE], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=900)
    out = " ".join(resumed.stdout.split())
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert str(failed.id) in out and "Completed" in out

    parents = {}
    for run in prefect_client.read_flow_runs():
        if run.deployment_id == failed.deployment_id and run.id != failed.id and run.state.is_completed():
            parent, children = mlflow_parent(services, run.id)
            if parent.data.tags.get("semflow.resumed_from_flow_run") == str(failed.id):
                parents[run.id] = (run, parent, children)
    [(run, parent, children)] = parents.values()
    assert run.work_pool_name == "semflow-cpu" and run.parameters["resume_of"] == str(failed.id)
    assert task_states(prefect_client, run.id) == {"prepare_data": "Cached", **{s: "Completed" for s in STAGES[1:]}}
    assert sorted(children) == sorted(STAGES[1:])
    assert parent.data.tags["semflow.prepare_data.run_id"] == failed_children["prepare_data"][0].info.run_id
