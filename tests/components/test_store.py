import sys

import pytest

from semflow.caching import source_digest, stage_key
from semflow.config import GenerationConfig
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
    assert list((tmp_path / "s").iterdir()) == []


def test_a_second_identical_write_keeps_the_first(tmp_path):
    store = ArtifactStore(tmp_path)
    for text in ("first", "second"):
        with store.writer("s", "k") as tmp:
            (tmp / "x.txt").write_text(text)
            store.finish(tmp, manifest(store, "k"))
    assert (store.path("s", "k") / "x.txt").read_text() == "first"
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["k"]


def test_stage_key_follows_config_upstream_and_source():
    modules = ("semflow.store",)
    base = stage_key("gen", {"generation": GenerationConfig()}, {"prompts": "abc"}, modules)
    assert base == stage_key("gen", {"generation": GenerationConfig()}, {"prompts": "abc"}, modules)
    assert base != stage_key("gen", {"generation": GenerationConfig(max_new_tokens=3)}, {"prompts": "abc"}, modules)
    assert base != stage_key("gen", {"generation": GenerationConfig()}, {"prompts": "abd"}, modules)
    assert base != stage_key("gen", {"generation": GenerationConfig()}, {"prompts": "abc"}, ("semflow.caching",))


def test_source_digest_sees_an_edit_anywhere_in_a_package(tmp_path, monkeypatch):
    package = tmp_path / "fakecomp"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "algo.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_digest.__wrapped__(("fakecomp",))
    (package / "sub" / "algo.py").write_text("X = 2\n")
    assert source_digest.__wrapped__(("fakecomp",)) != before
    with pytest.raises(ValueError, match="module 'not_a_module_xyz' not found"):
        source_digest.__wrapped__(("not_a_module_xyz",))
    sys.modules.pop("fakecomp", None)
