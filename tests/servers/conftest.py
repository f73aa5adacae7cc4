"""Real servers for the team tests: a Prefect server and an MLflow tracking server, both on PostgreSQL
(a fresh database each per test session), bound to 127.0.0.1; semflow's deployments registered on them;
one process worker per pool. Everything is started here and stopped at the end of the session.

PostgreSQL itself is the machine's (127.0.0.1:5432, trust auth); SEMFLOW_TEST_POSTGRES overrides the
admin URL. `make test` (the Makefile's `postgres` target) starts it when it is down.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

POSTGRES = os.environ.get("SEMFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@dataclass
class Services:
    """The running servers and workers, and the environment a client process needs to use them."""

    root: Path
    prefect_url: str
    mlflow_url: str
    env: dict[str, str]
    logs: list[Path] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, command: list[str], **kwargs) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        kwargs.setdefault("env", self.env)
        with log.open("w") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def log_text(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.read_text(errors='replace')}" for p in self.logs if p.exists())

    def stop(self) -> None:
        """Workers first (they report to the servers as they stop), then the servers; each process group
        whole, so the MLflow server's uvicorn and job-runner children go too."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[dict[str, str]]:
    """Two fresh databases (Prefect's and MLflow's), dropped afterwards."""
    import psycopg2

    try:
        admin = psycopg2.connect(POSTGRES, connect_timeout=10)
    except psycopg2.OperationalError as err:
        pytest.fail(f"PostgreSQL at {POSTGRES} is not reachable ({err}); .ci/run starts it", pytrace=False)
    admin.autocommit = True
    suffix = uuid.uuid4().hex[:8]
    names = {"prefect": f"semflow_prefect_{suffix}", "mlflow": f"semflow_mlflow_{suffix}"}
    with admin.cursor() as cur:
        for name in names.values():
            cur.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES.rsplit("/", 1)[0]
    yield {"prefect": f"{base}/{names['prefect']}".replace("postgresql://", "postgresql+asyncpg://", 1),
           "mlflow": f"{base}/{names['mlflow']}".replace("postgresql://", "postgresql+psycopg2://", 1)}
    with admin.cursor() as cur:
        for name in names.values():
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def services(postgres_databases, tmp_path_factory) -> Iterator[Services]:
    """Prefect server + MLflow server on PostgreSQL, the deployments, and a worker per pool."""
    root = tmp_path_factory.mktemp("team")
    prefect_port, mlflow_port = free_port(), free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(root / "prefect-results"),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    svc = Services(root, env["PREFECT_API_URL"], env["MLFLOW_TRACKING_URI"], env)
    try:
        server = svc.start("prefect-server", [
            str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            env={**env, "PREFECT_API_DATABASE_CONNECTION_URL": postgres_databases["prefect"]})
        tracking = svc.start("mlflow-server", [
            str(BIN / "mlflow"), "server", "--backend-store-uri", postgres_databases["mlflow"],
            "--artifacts-destination", str(root / "mlartifacts"), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "2"])
        wait_http(f"{svc.prefect_url}/health", server, svc.logs[0])
        wait_http(f"{svc.mlflow_url}/health", tracking, svc.logs[1])
        deploy = subprocess.run([str(BIN / "semflow"), "deploy"], cwd=REPO, env=env, capture_output=True, text=True)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        for pool in ("cpu", "gpu"):
            svc.start(f"worker-{pool}", [str(BIN / "semflow"), "worker", "--pool", pool, "--limit", "4"], cwd=REPO)
        yield svc
    finally:
        svc.stop()
        print(f"team test logs under {root}")


@pytest.fixture
def prefect_client(services):
    """A synchronous Prefect client on the team server (this process keeps its own default API)."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(services.prefect_url) as client:
        yield client
