"""semflow.memory: freed heap pages go back to the OS after a stage (the OOM of a long `semflow compare`)."""

from __future__ import annotations

import sys

import pytest

from semflow.memory import _malloc_trim, release_memory


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc's malloc_trim only")
def test_release_memory_gives_freed_heap_pages_back():
    # 2,000 blocks of 100 kB on the malloc heap (under glibc's 128 kB mmap threshold), one after the other;
    # every second one stays, so no freed block can merge with another or with the heap's top: free()
    # gives nothing back and the pages stay resident, as a stage's freed model and optimizer pages did
    blocks = [bytes([i % 2]) * 100_000 for i in range(2000)]
    kept = blocks[1::2]
    del blocks  # the other 1,000 (100 MB) are freed by reference counting, as a stage's models are
    freed = rss_mb()
    assert release_memory()
    assert freed - rss_mb() > 50, "malloc_trim gave back less than half of the 100 MB freed"
    assert len(kept) == 1000


def test_a_stage_releases_memory_after_its_body_even_when_the_body_fails(tmp_path, monkeypatch):
    from tests.components.test_store import stage_context, stage_key, text_body

    import tasks._stage as stage
    from semflow.store import ArtifactStore

    calls = []
    monkeypatch.setattr(stage, "release_memory", lambda: calls.append("released"))
    ctx = stage_context(tmp_path, str(ArtifactStore(tmp_path / "artifacts").root))

    stage.run_stage(stage_key(1), ctx, text_body("ok"))
    assert calls == ["released"]

    def failing(out):
        raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError, match="the body failed"):
        stage.run_stage(stage_key(2), ctx, failing)
    assert calls == ["released", "released"]
    stage.run_stage(stage_key(1), ctx, failing)  # already in the store: no body, nothing to release
    assert calls == ["released", "released"]
