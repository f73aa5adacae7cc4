"""The pipeline on the smoke preset: caching, reruns after config changes and failures, tracking."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from components.data import DataError
from flows.pipeline import pipeline
from semflow.store import ArtifactStore
from tests.conftest import SMOKE


def run(workdir, *overrides):
    return pipeline(str(SMOKE), [f"runtime.workdir={workdir}", *overrides])


def states(result):
    return {stage: info["state"] for stage, info in result["stages"].items()}


STAGES = ["prepare_data", "generate_teacher", "init_student", "scrg_correct", "distill_student", "describe_documents",
          "cade_align", "sedsi_index"]


def expect(*states_in_order):
    return dict(zip(STAGES, states_in_order, strict=True))


def test_rerun_is_cached_and_a_changed_setting_reruns_only_downstream(workdir):
    first = run(workdir)
    assert states(first) == expect(*["Completed"] * 8)

    second = run(workdir)
    assert states(second) == expect(*["Cached"] * 8)
    # The artifact store is the cache: nothing went through Prefect's result storage (no pickles)
    results = workdir.parent / "prefect-results"
    assert not results.exists() or not any(results.iterdir())
    assert second["stages"] == {k: {**v, "state": "Cached"} for k, v in first["stages"].items()}

    # describe_documents reads the teacher and the documents only: a generation length leaves it cached
    changed = run(workdir, "generation.max_new_tokens=3")
    assert states(changed) == expect("Cached", *["Completed"] * 4, "Cached", "Completed", "Completed")
    assert changed["stages"]["generate_teacher"]["key"] != first["stages"]["generate_teacher"]["key"]
    responses = pd.read_parquet(f"{changed['stages']['generate_teacher']['uri']}/responses.parquet")
    assert responses["response_tokens"].max() <= 3

    data_changed = run(workdir, "data.prompts.per_family=2")  # same documents: same EDs
    assert states(data_changed) == expect(*["Completed"] * 5, "Cached", "Completed", "Completed")

    # A distillation setting reruns only distillation; a baseline method skips SCRG.
    # CADE reruns exactly when the student's test generations (two of its slices) changed, SE-DSI
    # exactly when the student's weights (its backbone) changed.
    # (first and these runs share data and teacher responses; the other runs above do not.)
    def downstream_state(result, output, *previous):
        store = ArtifactStore(workdir / "artifacts")
        digest = lambda r: store.manifest("distill_student", r["stages"]["distill_student"]["key"]).outputs[output].digest  # noqa: E731
        return "Cached" if digest(result) in {digest(p) for p in previous} else "Completed"

    lr = run(workdir, "distill.train.lr=0.001")
    assert states(lr) == expect("Cached", "Cached", "Cached", "Cached", "Completed", "Cached",
                                downstream_state(lr, "eval", first), downstream_state(lr, "student", first))
    sft = run(workdir, "distill.method=sft")
    assert states(sft) == {"prepare_data": "Cached", "generate_teacher": "Cached", "init_student": "Cached",
                           "distill_student": "Completed", "describe_documents": "Cached",
                           "cade_align": downstream_state(sft, "eval", first, lr),
                           "sedsi_index": downstream_state(sft, "student", first, lr)}
    cade_changed = run(workdir, "distill.method=sft", "cade.vector_size=8", "sedsi.num_beams=3")
    assert states(cade_changed)["cade_align"] == "Completed" and states(cade_changed)["distill_student"] == "Cached"
    assert states(cade_changed)["sedsi_index"] == "Completed" and states(cade_changed)["describe_documents"] == "Cached"
    no_index = run(workdir, "sedsi.enabled=false")
    assert "sedsi_index" not in states(no_index) and "describe_documents" not in states(no_index)


def test_outputs_have_the_documented_schema(workdir):
    result = run(workdir)
    data_uri = result["stages"]["prepare_data"]["uri"]
    prompts = pd.read_parquet(f"{data_uri}/prompts.parquet")
    assert list(prompts.columns) == ["id", "family", "instruction", "input", "reference", "split"]
    assert set(prompts["family"]) == {"summarise", "encyclopedia", "continue"} and len(prompts) == 12
    assert list(pd.read_parquet(f"{data_uri}/documents.parquet").columns) == ["doc_id", "title", "text"]
    corpora = pd.read_parquet(f"{data_uri}/corpora.parquet")
    assert corpora.groupby("corpus").size().to_dict() == {"encyclopedia": 10, "news": 20}

    responses = pd.read_parquet(f"{result['stages']['generate_teacher']['uri']}/responses.parquet")
    assert list(responses["id"]) == list(prompts["id"])  # all splits by default, in order
    assert {"response", "prompt_tokens", "response_tokens", "finished"} <= set(responses.columns)
    manifest = json.loads((ArtifactStore(workdir / "artifacts").path("generate_teacher", result["stages"]["generate_teacher"]["key"]) / "manifest.json").read_text())
    assert manifest["outputs"]["responses"]["rows"] == 12


def test_failed_generation_keeps_data_prep_and_writes_no_partial_artifact(workdir, monkeypatch):
    import components.generation.batched as generation

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure in generation")

    monkeypatch.setattr(generation, "generate", broken)
    with pytest.raises(RuntimeError, match="injected failure"):
        run(workdir)
    store = ArtifactStore(workdir / "artifacts")
    assert len(store.stage_dirs("prepare_data")) == 1
    assert not (store.root / "generate_teacher").exists() or not any((store.root / "generate_teacher").iterdir())

    monkeypatch.undo()
    rerun = run(workdir)
    # describe_documents (teacher + documents only) ran beside the failed generation, to the end
    assert states(rerun) == expect("Cached", *["Completed"] * 4, "Cached", "Completed", "Completed")


def test_a_deleted_artifact_is_rebuilt(workdir):
    import shutil

    first = run(workdir)
    shutil.rmtree(first["stages"]["generate_teacher"]["uri"])
    again = run(workdir)
    # greedy generation writes the same responses again, so everything downstream is still cached
    assert states(again) == expect("Cached", "Completed", *["Cached"] * 6)
    assert (ArtifactStore(workdir / "artifacts").manifest("generate_teacher", again["stages"]["generate_teacher"]["key"])) is not None


def test_mlflow_has_a_parent_run_with_one_child_per_executed_stage(workdir):
    first = run(workdir)
    second = run(workdir)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("semflow")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {p.info.run_id for p in parents} == {first["mlflow_run_id"], second["mlflow_run_id"]}
    # The cached rerun logged no new child: both children belong to the first parent.
    assert sorted(c.info.run_name for c in children) == sorted(STAGES)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {first["mlflow_run_id"]}

    gen = next(c for c in children if c.info.run_name == "generate_teacher")
    assert gen.data.params["generation.max_new_tokens"] == "8"
    assert gen.data.metrics["responses"] == 12 and gen.data.metrics["tokens_per_second"] > 0
    artifacts = {a.path for a in client.list_artifacts(gen.info.run_id)} | {
        a.path for a in client.list_artifacts(gen.info.run_id, "preview")
    }
    assert {"manifest.json", "preview/responses.json"} <= artifacts

    parent = client.get_run(second["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["semflow.generate_teacher.state"] == "Cached"
    assert parent.data.tags["semflow.generate_teacher.run_id"] == gen.info.run_id
    assert parent.data.tags["prefect.flow_run_id"]


BAD_INPUTS = {
    "malformed-line": ('{"instruction": "ok"}\n{"instruction": "fine"}\n{"instruction": oops}\n', r"prompts\.jsonl:3: invalid JSON"),
    "missing-field": ('{"instruction": "ok"}\n{"question": "where?", "answer": "here"}\n', r"prompts\.jsonl:2: missing required field 'instruction'.*answer.*question"),
    "empty-source": ("", r"prompts\.jsonl has no records"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_clearly_and_leaves_no_artifact(workdir, tmp_path, case):
    text, message = BAD_INPUTS[case]
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(text)
    with pytest.raises(DataError, match=message):
        run(workdir, f"data.prompts={{kind: file, path: '{bad}'}}")
    store = ArtifactStore(workdir / "artifacts")
    assert store.stage_dirs("prepare_data") == []
    assert not (store.root / "prepare_data").exists()  # not even an empty stage folder
    assert not [p for p in (store.root / ".locks").rglob("*") if p.is_file()]  # no lock file left behind
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("semflow").experiment_id])
    assert {r.info.run_name: r.info.status for r in runs} == {"prepare_data": "FAILED", "pipeline-smoke": "FAILED"}
    assert mlflow.active_run() is None
