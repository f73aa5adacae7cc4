"""The content-addressed artifact store: `<artifact_root>/<stage>/<key>/`, written atomically.

Example::

    store = ArtifactStore(".semflow/artifacts")          # or "s3://bucket/semflow", "memory://x", ...
    with store.writer("prepare_data", key) as tmp:       # always a local temporary directory
        write_files(tmp)
        store.finish(tmp, manifest)                      # writes manifest.json
    # on leaving the block the artifact is published; on an exception tmp is deleted, nothing published
    files = store.local_dir(manifest)                    # a local folder holding the artifact's files

An artifact exists only once complete, so a crash never leaves half an artifact for a later run to
trust, and `manifest.json` inside it is what downstream stages and `semflow stages` read.

- Local root: tmp is a hidden directory beside the target, renamed into place (atomic on one filesystem).
- fsspec URL root (shared by GPU workers on other machines): object stores have no atomic rename, so the
  files are uploaded to `<root>/<stage>/<key>/` with `manifest.json` LAST; its presence marks a complete
  artifact. An upload that died half way has no manifest: it is invisible and the next writer replaces it.
  Reading goes through a local cache (`cache_dir`) that `local_dir` fills on first use. Credentials come
  from the environment (s3fs: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for MinIO).

`lock(stage, key)` lets concurrent runs compute each artifact once: run_stage takes it and looks again.
It is a local file lock: for a URL root it serialises the runs on one machine only. Two machines that
compute the same key at the same moment both compute it and the first manifest wins: a writer that finds
one before uploading, or when it puts its own (an exclusive create where the filesystem has one: S3
If-None-Match), discards its copy. Their data files can interleave in that case, which is harmless when
the stage is deterministic, as content addressing assumes; one machine per key (or one shared run) avoids it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

from filelock import FileLock, Timeout
from pydantic import BaseModel, Field

from semflow.runtime import is_url

MANIFEST = "manifest.json"
CACHE_ENV = "SEMFLOW_ARTIFACT_CACHE"
log = logging.getLogger(__name__)


class OutputRef(BaseModel):
    """One output file of a stage: where it is and a digest of its content."""

    path: str
    digest: str
    rows: int | None = None


class StageManifest(BaseModel):
    """What a stage returns through Prefect: small, JSON-serialisable, never models or frames."""

    stage: str
    key: str
    uri: str  # a local folder, or for a URL root the URL `<root>/<stage>/<key>`: read it via local_dir()
    digest: str  # over the outputs' digests: changes exactly when some output's content changes
    outputs: dict[str, OutputRef] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def output(self, name: str) -> OutputRef:
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"stage {self.stage} has no output {name!r} (has {sorted(self.outputs)})") from None


def default_cache_dir(root: str) -> Path:
    """$SEMFLOW_ARTIFACT_CACHE, else one folder per store under ~/.cache (two roots never share copies)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path("~/.cache/semflow/artifacts").expanduser() / hashlib.sha256(root.encode()).hexdigest()[:16]


class ArtifactStore:
    """`<root>/<stage>/<key>/` for a local folder or an fsspec URL root; `cache_dir` holds this machine's
    copies of a URL root's artifacts, its work dirs and locks (default: see default_cache_dir)."""

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None):
        location = str(root)
        self.remote = is_url(location)
        if self.remote:
            self.root: str | Path = location.rstrip("/")
            cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.root)
            self.cache_dir: Path | None = cache.expanduser().resolve()
        else:
            self.root = Path(location.removeprefix("file://")).expanduser().resolve()
            self.cache_dir = None  # a local store is its own copy

    @cached_property
    def _located(self):
        """(filesystem, path of the root on it); fsspec reuses one filesystem instance per URL options."""
        import fsspec

        return fsspec.core.url_to_fs(self.root)

    @property
    def fs(self):
        """The fsspec filesystem of a URL root (s3fs for s3://)."""
        return self._located[0]

    @property
    def _local_root(self) -> Path:
        return self.cache_dir if self.remote else self.root

    def _remote(self, stage: str, *parts: str) -> str:
        return posixpath.join(self._located[1], stage, *parts)

    def uri(self, stage: str, key: str) -> str:
        """What a manifest records: the local folder, or the URL `<root>/<stage>/<key>`."""
        return f"{self.root}/{stage}/{key}" if self.remote else str(self.root / stage / key)

    def path(self, stage: str, key: str) -> Path:
        """The artifact's folder on this machine: in the store itself, or for a URL root its cache copy
        (which exists only once local_dir fetched it or this machine wrote it)."""
        return self._local_root / stage / key

    def work_dir(self, stage: str, key: str) -> Path:
        """Scratch space that outlives a failed run of this artifact (training checkpoints), hidden
        beside the artifact; run_stage removes it once the artifact is complete. Always local (for a URL
        root under the cache dir): a crashed stage resumes on the same machine; rerun on another machine,
        it restarts its training there."""
        return self._local_root / stage / f".{key}.work"

    def manifest(self, stage: str, key: str) -> StageManifest | None:
        """The manifest of a complete artifact, or None when there is none."""
        if self.remote:
            try:  # a GET, not fs.exists: no listing cache can hide a manifest another machine just wrote
                text = self.fs.cat_file(self._remote(stage, key, MANIFEST))
            except FileNotFoundError:
                return None
            return StageManifest.model_validate_json(text)
        file = self.path(stage, key) / MANIFEST
        if not file.is_file():
            return None
        return StageManifest.model_validate_json(file.read_text())

    def keys(self, stage: str) -> list[str]:
        """The keys of the stage's complete artifacts, sorted; works for every kind of root."""
        return [m.key for m in self.manifests(stage)]

    def manifests(self, stage: str) -> list[StageManifest]:
        """The manifests of the stage's complete artifacts, in key order."""
        return [m for key in self._listed(stage) if (m := self.manifest(stage, key)) is not None]

    def stage_dirs(self, stage: str) -> list[Path]:
        """The stage's artifact folders; a local root only (for any root: keys() or manifests())."""
        if self.remote:
            raise ValueError(f"{self.root} is a URL: list its artifacts with keys() or manifests()")
        base = self.root / stage
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []

    def _listed(self, stage: str) -> list[str]:
        """Sorted names of the stage's visible folders, complete or not (hidden: temp, work, leftovers)."""
        if not self.remote:
            return [p.name for p in self.stage_dirs(stage)]
        fs, base = self.fs, self._remote(stage)
        fs.invalidate_cache(base)  # another machine may have added an artifact since we last listed
        try:
            entries = fs.ls(base, detail=True)
        except FileNotFoundError:
            return []
        names = (posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")
        return sorted(n for n in names if not n.startswith("."))

    @contextmanager
    def writer(self, stage: str, key: str) -> Iterator[Path]:
        target = self.path(stage, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Hidden temporary name in the same directory: the rename below is atomic on one filesystem.
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=target.parent))
        try:
            yield tmp
            if not (tmp / MANIFEST).is_file():
                raise RuntimeError(f"{stage}/{key}: writer closed without a manifest (call finish)")
            if self.remote:
                if self._upload(tmp, stage, key):
                    _install(tmp, target)  # this machine's cache copy, so local_dir need not download it
                else:
                    shutil.rmtree(tmp)
                return
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target / MANIFEST).is_file():  # not a concurrent identical write: a real error
                    raise
                shutil.rmtree(tmp)  # another run wrote the same content-addressed artifact first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            _remove_if_empty(target.parent)  # a failed first artifact of a stage leaves no empty folder
            raise

    def _upload(self, tmp: Path, stage: str, key: str) -> bool:
        """Put tmp's files under `<root>/<stage>/<key>/`, manifest last; False when a complete artifact
        was there first (kept: a concurrent identical write)."""
        fs, folder = self.fs, self._remote(stage, key)
        fs.invalidate_cache(folder)
        leftovers = fs.find(folder)
        if posixpath.join(folder, MANIFEST) in leftovers:
            log.info("%s/%s: already published by another run; keeping that copy", stage, key)
            return False
        if leftovers:  # no manifest: files of an upload that died half way, never read by anyone
            log.info("%s/%s: replacing %d files of an incomplete upload", stage, key, len(leftovers))
            fs.rm(leftovers)
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and p != tmp / MANIFEST)
        if files:
            fs.put([str(p) for p in files], [posixpath.join(folder, p.relative_to(tmp).as_posix()) for p in files])
        try:  # exclusive create where the filesystem has one (S3: If-None-Match): the first manifest wins
            fs.pipe_file(posixpath.join(folder, MANIFEST), (tmp / MANIFEST).read_bytes(), mode="create")
        except FileExistsError:
            log.info("%s/%s: another run published it first; keeping that copy", stage, key)
            return False
        return True

    def local_dir(self, manifest: StageManifest) -> Path:
        """A local folder with the artifact's files: the store itself, or the cache copy of a URL root,
        downloaded on first use (into a temporary folder renamed into place, so a half download is never
        trusted). A cached copy is reused while its digest matches the manifest's."""
        if not self.remote:
            return Path(manifest.uri)
        target = self.path(manifest.stage, manifest.key)
        if _digest_at(target) == manifest.digest:
            return target
        fs, folder = self.fs, self._remote(manifest.stage, manifest.key)
        fs.invalidate_cache(folder)
        files = fs.find(folder)
        if posixpath.join(folder, MANIFEST) not in files:
            raise FileNotFoundError(f"{manifest.uri}: no complete artifact in the store")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.key}.get-", dir=target.parent))
        try:
            fs.get(files, [str(tmp / posixpath.relpath(f, folder)) for f in files])
            if _digest_at(tmp) != manifest.digest:
                log.warning("%s: the store holds a different version (digest %s) than the manifest given (%s)",
                            manifest.uri, _digest_at(tmp), manifest.digest)
            _install(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Held while computing an artifact, so a concurrent run with the same key waits, then finds it.

        A local file lock in `<root>/.locks/<stage>/<key>.lock` (outside the stage folder, which holds
        artifacts only); for a URL root under the cache dir, so it serialises runs on this machine (or
        sharing this cache dir on a mount with working locks), not across machines.

        The lock file is deleted on release, so no run leaves one behind. That is safe because the holder
        unlinks it *before* releasing and filelock (>= 4, pinned) checks, once flock succeeds, that the
        inode it locked still has a name: a waiter that locked the unlinked file retries on a new one."""
        file = self._local_root / ".locks" / stage / f"{key}.lock"
        file.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(file)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            log.info("%s/%s: another run is computing this artifact; waiting for it (%s)", stage, key, file)
            lock.acquire()
        try:
            yield
        finally:
            file.unlink(missing_ok=True)
            lock.release()  # the .locks/<stage>/ folder stays: removing it would race a waiter's open

    @staticmethod
    def finish(tmp: Path, manifest: StageManifest) -> StageManifest:
        """Write the manifest into the temporary directory; paths inside are made final."""
        (tmp / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
        return manifest


def store_of(manifest: StageManifest) -> ArtifactStore:
    """The store that holds a manifest's artifact: its uri is `<root>/<stage>/<key>`."""
    suffix = f"/{manifest.stage}/{manifest.key}"
    uri = manifest.uri.rstrip("/")
    if not is_url(uri):
        return ArtifactStore(Path(uri).parent.parent)
    if not uri.endswith(suffix):
        raise ValueError(f"{manifest.uri}: not an artifact URI of the form <root>{suffix}")
    return ArtifactStore(uri.removesuffix(suffix))


def local_dir(manifest: StageManifest) -> Path:
    """A local folder with a manifest's files, wherever its store is (see ArtifactStore.local_dir)."""
    if not is_url(manifest.uri):
        return Path(manifest.uri)
    return store_of(manifest).local_dir(manifest)


def _digest_at(folder: Path) -> str | None:
    """The digest in the manifest of a local artifact folder, None when it has none."""
    file = folder / MANIFEST
    return StageManifest.model_validate_json(file.read_text()).digest if file.is_file() else None


def _install(tmp: Path, target: Path) -> None:
    """Rename a finished local folder to target, replacing an older copy; when a concurrent install
    got there first, theirs stays. Best effort: a failure only costs a later download."""
    try:
        if _digest_at(target) is not None and _digest_at(target) == _digest_at(tmp):
            shutil.rmtree(tmp)  # an identical copy is in place (readers may be using it): keep it
            return
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old)  # onto the empty directory: allowed, and atomic
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, target)
    except OSError as err:
        log.debug("%s: not installed (%s); a concurrent copy is kept", target, err)
        shutil.rmtree(tmp, ignore_errors=True)


def digest_dir(path: Path) -> str:
    """sha256 over a folder's relative file names and bytes (a saved model: weights, config, tokenizer)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or gone already
        pass
