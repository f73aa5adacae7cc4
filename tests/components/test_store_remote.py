"""The artifact store on an fsspec URL: fsspec's in-process `memory://`, and the real S3 API of a moto
server (started here, on 127.0.0.1, for this module). Every test runs on both."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import fsspec
import pytest

from semflow.store import MANIFEST, ArtifactStore, OutputRef, StageManifest, local_dir
from tests.components.test_store import stage_context, stage_key, text_body

MOTO = Path(sys.executable).parent / "moto_server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """A moto S3 server for this module; its URL. Stopped (and waited for) at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"moto_server did not answer on {url}:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def clear_memory_fs() -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]


@pytest.fixture(params=["memory", "s3"])
def root(request, tmp_path, monkeypatch):
    """A fresh store URL (memory://<uuid>/semflow or s3://<new bucket>/semflow); the default cache dir
    (the one output_path and local_dir(manifest) use) in tmp_path."""
    monkeypatch.setenv("SEMFLOW_ARTIFACT_CACHE", str(tmp_path / "cache"))
    name = f"semflow-{uuid.uuid4().hex[:12]}"
    if request.param == "memory":
        clear_memory_fs()
        yield f"memory://{name}/semflow"
        clear_memory_fs()
        return
    import s3fs

    endpoint = request.getfixturevalue("moto_endpoint")
    for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(var, value)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made for another endpoint or environment
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    yield f"s3://{name}/semflow"
    s3fs.S3FileSystem.clear_instance_cache()


def remote_files(root: str) -> list[str]:
    """Every file under the store URL, relative to it."""
    fs, base = fsspec.core.url_to_fs(root)
    fs.invalidate_cache()
    return sorted(f.removeprefix(base.rstrip("/") + "/") for f in fs.find(base))


def manifest(store: ArtifactStore, key: str, digest: str = "d") -> StageManifest:
    return StageManifest(stage="s", key=key, uri=store.uri("s", key), digest=digest,
                         outputs={"x": OutputRef(path="x.txt", digest=digest, rows=1)})


def write(store: ArtifactStore, key: str, files: dict[str, bytes], digest: str = "d") -> StageManifest:
    with store.writer("s", key) as tmp:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        return store.finish(tmp, manifest(store, key, digest))


FILES = {"x.txt": b"hello", "model/weights.bin": bytes(range(256)) * 64, "model/config.json": b"{}"}


def test_a_written_artifact_is_uploaded_manifest_visible_and_readable_elsewhere(root, tmp_path):
    store = ArtifactStore(root, cache_dir=tmp_path / "writer-cache")
    with store.writer("s", "k") as tmp:
        for name, data in FILES.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        written = store.finish(tmp, manifest(store, "k"))
        assert store.manifest("s", "k") is None and remote_files(root) == []  # nothing before the end
    assert written.uri == f"{root}/s/k"
    assert remote_files(root) == sorted(f"s/k/{name}" for name in [*FILES, MANIFEST])
    assert store.manifest("s", "k") == written
    # The writer's own machine keeps its copy as the cache; another machine downloads it.
    assert store.local_dir(written) == tmp_path / "writer-cache" / "s" / "k"
    other = ArtifactStore(root, cache_dir=tmp_path / "reader-cache")
    for folder in (store.local_dir(written), other.local_dir(written), local_dir(written)):
        assert {n: (folder / n).read_bytes() for n in FILES} == FILES
    assert local_dir(written) == tmp_path / "cache" / "s" / "k"  # the default cache ($SEMFLOW_ARTIFACT_CACHE)
    assert not [p for p in (tmp_path / "reader-cache" / "s").iterdir() if p.name != "k"]  # no temp left


def test_a_cached_copy_is_reused_while_its_digest_matches(root, tmp_path, monkeypatch):
    store = ArtifactStore(root, cache_dir=tmp_path / "c")
    first = write(store, "k", {"x.txt": b"one"}, digest="d1")
    reader = ArtifactStore(root, cache_dir=tmp_path / "reader")
    assert (reader.local_dir(first) / "x.txt").read_bytes() == b"one"
    fs = reader.fs
    gets = []
    monkeypatch.setattr(fs, "get", lambda *args, **kwargs: gets.append(args))
    assert (reader.local_dir(first) / "x.txt").read_bytes() == b"one" and gets == []
    monkeypatch.undo()
    # The artifact was deleted from the store and rebuilt with other bytes: the stale copy is replaced.
    shutil.rmtree(tmp_path / "c")
    fs.rm(fs.find(store._remote("s", "k")))
    second = write(ArtifactStore(root, cache_dir=tmp_path / "c2"), "k", {"x.txt": b"two"}, digest="d2")
    assert (reader.local_dir(second) / "x.txt").read_bytes() == b"two"


def test_a_failing_writer_uploads_nothing(root, tmp_path):
    store = ArtifactStore(root, cache_dir=tmp_path / "c")
    with pytest.raises(RuntimeError, match="boom"):
        with store.writer("s", "k1") as tmp:
            (tmp / "x.txt").write_text("half")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="without a manifest"):
        with store.writer("s", "k2") as tmp:
            (tmp / "x.txt").write_text("no manifest")
    assert remote_files(root) == [] and store.keys("s") == []
    assert not (tmp_path / "c" / "s").exists()  # local temp dirs gone too


def test_an_upload_that_dies_before_its_manifest_is_invisible_and_replaced(root, tmp_path, monkeypatch):
    crashing = ArtifactStore(root, cache_dir=tmp_path / "c1")

    def crash(*args, **kwargs):
        raise ConnectionError("network lost before the manifest")

    monkeypatch.setattr(crashing.fs, "pipe_file", crash)
    with pytest.raises(ConnectionError):
        write(crashing, "k", {"x.txt": b"partial", "stale.bin": b"junk"})
    monkeypatch.undo()
    assert remote_files(root) == ["s/k/stale.bin", "s/k/x.txt"]  # half an artifact, but no manifest:
    assert crashing.manifest("s", "k") is None and crashing.keys("s") == []  # invisible
    assert not (tmp_path / "c1" / "s" / "k").exists()

    later = ArtifactStore(root, cache_dir=tmp_path / "c2")
    done = write(later, "k", {"x.txt": b"complete"})
    assert remote_files(root) == ["s/k/manifest.json", "s/k/x.txt"]  # the leftover is gone
    assert later.keys("s") == ["k"]
    assert (ArtifactStore(root, cache_dir=tmp_path / "c3").local_dir(done) / "x.txt").read_bytes() == b"complete"


def test_a_second_identical_write_keeps_the_first(root, tmp_path):
    first = write(ArtifactStore(root, cache_dir=tmp_path / "c1"), "k", {"x.txt": b"first"})
    second_store = ArtifactStore(root, cache_dir=tmp_path / "c2")
    write(second_store, "k", {"x.txt": b"second"})
    assert second_store.manifest("s", "k") == first
    assert (second_store.local_dir(first) / "x.txt").read_bytes() == b"first"
    assert remote_files(root) == ["s/k/manifest.json", "s/k/x.txt"]


def test_a_manifest_published_during_our_upload_wins(root, tmp_path, monkeypatch):
    """Two machines upload the same key at once: the exclusive create of manifest.json (S3 If-None-Match)
    keeps the first manifest, and the loser discards its copy."""
    store = ArtifactStore(root, cache_dir=tmp_path / "c")
    fs = store.fs
    theirs = manifest(store, "k", digest="theirs")
    real_put = fs.put

    def put_then_other_machine_finishes(*args, **kwargs):
        real_put(*args, **kwargs)
        fs.pipe_file(store._remote("s", "k", MANIFEST), theirs.model_dump_json().encode())

    monkeypatch.setattr(fs, "put", put_then_other_machine_finishes)
    write(store, "k", {"x.txt": b"ours"}, digest="ours")
    assert store.manifest("s", "k") == theirs
    assert not (tmp_path / "c" / "s" / "k").exists()  # our copy is not taken for theirs


def test_listing_works_on_a_url_root(root, tmp_path, monkeypatch):
    from tasks.sedsi_index import index_manifests

    store = ArtifactStore(root, cache_dir=tmp_path / "c")
    for key in ("b", "a"):
        write(store, key, {"x.txt": key.encode()})
    monkeypatch.setattr(store.fs, "pipe_file", lambda *a, **k: (_ for _ in ()).throw(ConnectionError()))
    with pytest.raises(ConnectionError):
        write(store, "c", {"x.txt": b"partial"})
    monkeypatch.undo()
    assert store.keys("s") == ["a", "b"]  # the incomplete c is not listed
    assert [m.key for m in store.manifests("s")] == ["a", "b"]
    assert store.keys("absent") == [] and store.manifests("absent") == []
    with pytest.raises(ValueError, match="keys\\(\\) or manifests\\(\\)"):
        store.stage_dirs("s")

    index = StageManifest(stage="sedsi_index", key="i1", uri=store.uri("sedsi_index", "i1"), digest="d")
    with store.writer("sedsi_index", "i1") as tmp:
        store.finish(tmp, index)
    assert index_manifests(root) == [index]


def test_run_stage_on_a_url_root(root, tmp_path):
    from mlflow import MlflowClient

    from tasks._stage import output_path, run_stage

    ctx = stage_context(tmp_path, root)
    store = ArtifactStore(root)  # the default cache: $SEMFLOW_ARTIFACT_CACHE = tmp_path/cache
    calls, key = [], stage_key()
    k = key.key

    def body(out):
        calls.append(out.root)
        checkpoint = store.work_dir("s", k) / "ckpt"
        checkpoint.mkdir(parents=True)
        assert str(checkpoint).startswith(str(tmp_path / "cache"))  # training scratch stays local
        return text_body("hello")(out)

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    made = run_stage(key, ctx, body)
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before  # the stage's store does not leak to later runs
    assert made.uri == f"{root}/s/{k}" and store.manifest("s", k) == made
    assert remote_files(root) == [f"s/{k}/manifest.json", f"s/{k}/x.txt"]
    assert not store.work_dir("s", k).exists()  # removed once the artifact is complete
    assert output_path(made, "x").read_text() == "hello"
    shutil.rmtree(tmp_path / "cache" / "s" / k)  # e.g. another machine: fetched again from the store
    assert output_path(made, "x").read_text() == "hello"

    client = MlflowClient(ctx.tracking_uri)
    assert "manifest.json" in {a.path for a in client.list_artifacts(made.mlflow_run_id)}
    assert client.get_run(made.mlflow_run_id).data.tags["semflow.artifact_uri"] == made.uri

    again = run_stage(key, ctx, body)
    assert again == made and len(calls) == 1
