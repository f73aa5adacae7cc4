"""Running semflow for a team: work pools, deployments, workers and resuming a failed flow run.

`deploy` and `worker` are thin wrappers over Prefect's own commands (`prefect work-pool create`,
`prefect deploy --all`, `prefect worker start`), so what they do is what Prefect's documentation says.
They talk to whatever API PREFECT_API_URL names (a team server), as every Prefect command does.

Resuming: Prefect 3 has no "restart from task X", and none is needed. Every stage's cache key depends
only on its config, its inputs' digests and its code, so rerunning a flow run's own parameters brings its
finished stages back Cached and its interrupted training back from the last checkpoint.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

POOLS = {"cpu": "semflow-cpu", "gpu": "semflow-gpu"}
PIPELINE_FLOW = "semflow-pipeline"


def prefect_command() -> str:
    """The `prefect` executable of this environment (beside the running Python, else on PATH)."""
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


def deploy_commands(prefect_file: Path, gpu_concurrency: int | None) -> list[list[str]]:
    """What `semflow deploy` runs: both pools (process workers), the GPU pool's limit, every deployment."""
    prefect = prefect_command()
    commands = [[prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"] for pool in POOLS.values()]
    if gpu_concurrency is not None:
        commands.append([prefect, "work-pool", "set-concurrency-limit", POOLS["gpu"], str(gpu_concurrency)])
    commands.append([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)])
    return commands


def worker_command(pool: str, name: str | None, limit: int | None) -> list[str]:
    command = [prefect_command(), "worker", "start", "--pool", POOLS[pool], "--type", "process"]
    if name:
        command += ["--name", name]
    if limit is not None:
        command += ["--limit", str(limit)]
    return command


def run_checked(command: list[str], cwd: Path | None = None) -> None:
    completed = subprocess.run(command, cwd=cwd)
    if completed.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` exited with {completed.returncode}")


# ------------------------------------------------------------------------------------------- resume
@dataclass
class ResumeTarget:
    flow_run_id: str
    name: str
    state: str
    parameters: dict[str, Any]
    deployment_id: str | None


def find_flow_run(flow_run_id: str | None) -> ResumeTarget:
    """The named pipeline flow run, or else the newest one that Failed or Crashed.

    A process killed with SIGKILL never reports its end, so its flow run stays Running; it is never
    picked by default (it could be a teammate's live run): name it to resume it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    def newest(client, types: list[StateType]) -> list:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[PIPELINE_FLOW])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types))),
            sort=FlowRunSort.START_TIME_DESC, limit=5)

    with get_client(sync_client=True) as client:
        if flow_run_id:
            try:
                run = client.read_flow_run(UUID(flow_run_id))
            except ValueError:
                raise LookupError(f"{flow_run_id!r} is not a flow run id (a UUID)") from None
            except Exception:  # ObjectNotFound and friends
                raise LookupError(f"no flow run {flow_run_id} in {_where()}") from None
            flow = client.read_flow(run.flow_id)
            if flow.name != PIPELINE_FLOW:
                raise LookupError(f"flow run {flow_run_id} is a run of {flow.name!r}, not {PIPELINE_FLOW!r}")
            if run.state is not None and run.state.is_completed():
                raise LookupError(f"flow run {flow_run_id} ({run.name}) already completed; nothing to resume")
        else:
            runs = newest(client, [StateType.FAILED, StateType.CRASHED])
            if not runs:
                running = newest(client, [StateType.RUNNING, StateType.PENDING])
                hint = ("; still Running (a killed process leaves its run so): "
                        + ", ".join(f"{r.name} {r.id}" for r in running) + " — name one to resume it") if running else ""
                raise LookupError(f"no failed or crashed {PIPELINE_FLOW} run in {_where()}{hint}")
            run = runs[0]
    return ResumeTarget(
        flow_run_id=str(run.id),
        name=run.name,
        state=run.state.name if run.state else "unknown",
        parameters=dict(run.parameters),
        deployment_id=str(run.deployment_id) if run.deployment_id else None,
    )


def _where() -> str:
    """The Prefect API a lookup went to, as a user would name it (not the throwaway port of the
    temporary server that the embedded mode starts)."""
    import os

    url = os.environ.get("PREFECT_API_URL")
    return url or f"the embedded Prefect store under {os.environ.get('PREFECT_HOME', '~/.prefect')}"


def mark_superseded(target: ResumeTarget, tracking_uri: str) -> None:
    """A flow run killed with SIGKILL never reported its end: Prefect still shows it Running and MLflow its
    runs RUNNING. Resuming it (by id: the user says it is dead) records that: Crashed in Prefect, KILLED in
    MLflow."""
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    if target.state in ("Running", "Pending"):
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(target.flow_run_id), Crashed(message="superseded by semflow resume"),
                                      force=True)
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return
    for parent in client.search_runs(experiments, f"tags.`prefect.flow_run_id` = '{target.flow_run_id}'"):
        children = client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        for run in [parent, *children]:
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="KILLED")


def resume_via_deployment(target: ResumeTarget, timeout_s: float | None) -> Any:
    """Submit the same parameters to the flow run's deployment and wait: a worker runs it, as before."""
    from prefect.deployments import run_deployment

    return run_deployment(name=UUID(target.deployment_id), parameters={**target.parameters,
                          "resume_of": target.flow_run_id}, timeout=timeout_s)
