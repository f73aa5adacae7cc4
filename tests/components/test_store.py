import logging
import sys
import threading

import pytest

from semflow.caching import StageKey
from semflow.store import ArtifactStore, OutputRef, StageManifest


def manifest(store: ArtifactStore, key: str) -> StageManifest:
    return StageManifest(
        stage="s", key=key, uri=str(store.path("s", key)), digest="d",
        outputs={"x": OutputRef(path="x.txt", digest="d", rows=1)},
    )


def test_writer_renames_a_complete_artifact_into_place(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.writer("s", "k1") as tmp:
        (tmp / "x.txt").write_text("hello")
        store.finish(tmp, manifest(store, "k1"))
        assert store.manifest("s", "k1") is None  # not visible before the block ends
    assert (store.path("s", "k1") / "x.txt").read_text() == "hello"
    assert store.manifest("s", "k1").outputs["x"].rows == 1
    assert [p.name for p in store.stage_dirs("s")] == ["k1"]


def test_a_failing_writer_leaves_nothing_behind(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with store.writer("s", "k1") as tmp:
            (tmp / "x.txt").write_text("half")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="without a manifest"):
        with store.writer("s", "k2") as tmp:
            (tmp / "x.txt").write_text("no manifest")
    assert not (tmp_path / "s").exists()  # no temporary folder, not even an empty stage folder


def test_a_second_identical_write_keeps_the_first(tmp_path):
    store = ArtifactStore(tmp_path)
    for text in ("first", "second"):
        with store.writer("s", "k") as tmp:
            (tmp / "x.txt").write_text(text)
            store.finish(tmp, manifest(store, "k"))
    assert (store.path("s", "k") / "x.txt").read_text() == "first"
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["k"]


# --------------------------------------------------------------------------- one computation per key
def stage_context(tmp_path, artifact_root: str):
    """A RunContext for calling run_stage directly: MLflow in a sqlite file, no parent run."""
    from mlflow import MlflowClient

    from semflow.runtime import RunContext

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = MlflowClient(uri).create_experiment("store-tests", artifact_location=(tmp_path / "mlruns").as_uri())
    return RunContext(artifact_root=artifact_root, tracking_uri=uri, experiment_id=experiment)


def stage_key(p: int = 1) -> StageKey:
    """The key of a test stage "s" (its source: semflow.store's import graph)."""
    return StageKey(stage="s", config={"p": p}, upstream={}, module="semflow.store")


def text_body(text: str):
    """A stage body writing one file `x.txt`."""
    from semflow.caching import file_digest

    def body(out):
        (out.root / "x.txt").write_text(text)
        out.refs["x"] = OutputRef(path="x.txt", digest=file_digest(out.root / "x.txt"), rows=1)
        return {"rows": 1.0}, {}

    return body


class LogEvent(logging.Handler):
    """Sets an event when a record containing `needle` is logged (from any thread)."""

    def __init__(self, needle: str):
        super().__init__(logging.INFO)
        self.needle, self.seen = needle, threading.Event()

    def emit(self, record):
        if self.needle in record.getMessage():
            self.seen.set()


@pytest.fixture
def lock_waits(caplog):
    """An event set when some run_stage starts waiting for the lock another one holds."""
    handler = LogEvent("waiting for it")
    logger = logging.getLogger("semflow.store")
    logger.addHandler(handler)
    with caplog.at_level(logging.INFO):
        yield handler.seen
    logger.removeHandler(handler)


def run_concurrently(ctx, key: StageKey, lock_waits) -> tuple[list[StageManifest], list[str]]:
    """Two run_stage calls on one key, the second started while the first computes; the first finishes
    only once the second waits for the lock. Returns both manifests and which bodies ran."""
    from tasks._stage import run_stage

    ran, started, results = [], threading.Event(), {}

    def first_body(tmp):
        ran.append("first")
        started.set()
        assert lock_waits.wait(30), "the second run never waited for the lock"
        return text_body("first")(tmp)

    def second_body(tmp):
        ran.append("second")
        return text_body("second")(tmp)

    def call(name, body):
        try:
            results[name] = run_stage(key, ctx, body)
        except BaseException as err:  # reported by the assertions below, not lost in the thread
            results[name] = err

    first = threading.Thread(target=call, args=("first", first_body))
    first.start()
    assert started.wait(60)
    second = threading.Thread(target=call, args=("second", second_body))
    second.start()
    for thread in (first, second):
        thread.join(120)
    assert all(isinstance(results.get(name), StageManifest) for name in ("first", "second")), results
    return [results["first"], results["second"]], ran


def test_concurrent_runs_of_one_key_compute_it_once(tmp_path, lock_waits, caplog):
    store = ArtifactStore(tmp_path / "artifacts")
    ctx = stage_context(tmp_path, str(store.root))
    key = stage_key()
    (first, second), ran = run_concurrently(ctx, key, lock_waits)
    assert ran == ["first"]
    assert second == first and first.uri == str(store.path("s", key.key))
    assert (store.path("s", key.key) / "x.txt").read_text() == "first"
    assert "computed by a concurrent run while this one waited" in caplog.text
    # The lock file lives outside the stage folder, which holds artifacts only.
    assert [p.name for p in (tmp_path / "artifacts" / "s").iterdir()] == [key.key]
    assert store.stage_dirs("s") == [store.path("s", key.key)] and store.keys("s") == [key.key]


@pytest.mark.timeout(60)  # a lock still held would block: fail instead of hanging
def test_the_lock_is_released_when_the_body_fails(tmp_path):
    from tasks._stage import run_stage

    store = ArtifactStore(tmp_path / "artifacts")
    ctx = stage_context(tmp_path, str(store.root))

    def broken(out):
        raise RuntimeError("boom")

    key = stage_key()
    with pytest.raises(RuntimeError, match="boom"):
        run_stage(key, ctx, broken)
    assert store.stage_dirs("s") == [] and not (tmp_path / "artifacts" / "s").exists()
    manifest = run_stage(key, ctx, text_body("again"))  # would block forever on a held lock
    assert store.manifest("s", key.key) == manifest
    with store.lock("s", key.key):  # free again after a successful run
        pass
