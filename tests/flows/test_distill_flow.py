"""SCRG and distillation as pipeline stages on the smoke preset: outputs, MLflow logging and the model
registry, resume after a failure mid-training, and bad input."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM

from components.distill import DistillDataError, tokenize_prompts
from components.generation import PromptTooLongError
from components.models.student import VocabularyMismatch
from components.models.tiny import build_tiny_model
from flows.pipeline import failed_stage, pipeline
from semflow.config import TinyModelConfig
from tests.conftest import SMOKE, crash_after_checkpoint


def run(workdir, *overrides):
    return pipeline(str(SMOKE), [f"runtime.workdir={workdir}", *overrides])


def test_scrg_and_distill_outputs_and_tracking(workdir):
    result = run(workdir)
    scrg = pd.read_parquet(f"{result['stages']['scrg_correct']['uri']}/scrg.parquet")
    assert {"id", "prompt", "original", "revised", "revised_ids", "j", "d_j", "tokens_regenerated", "source"} <= set(scrg.columns)
    assert set(scrg["split"]) == {"train"}
    for row in scrg.itertuples():
        if row.j >= 0:  # the prefix before the corrected index is the original sample's
            assert list(row.revised_ids[: row.j]) == list(row.original_ids[: row.j])
            assert row.revised_ids[row.j] != row.original_ids[row.j] if row.j < len(row.original_ids) else True
    metrics = result["stages"]["scrg_correct"]["metrics"]
    assert 0 <= metrics["corrected_share"] <= 1 and metrics["sequences"] == len(scrg)

    uri = result["stages"]["distill_student"]["uri"]
    model = AutoModelForCausalLM.from_pretrained(f"{uri}/student")
    assert model.config.num_hidden_layers == 1  # smoke keeps teacher layer 1 of 2
    samples = pd.read_parquet(f"{uri}/eval.parquet")
    assert {"reference", "teacher", "student_before", "student_after", "rougeL_before", "rougeL_after"} <= set(samples.columns)
    history = pd.read_parquet(f"{uri}/history.parquet")
    assert list(history["step"]) == [1, 2, 3]
    assert ((history["band_lower"] > 0) & (history["band_lower"] < history["band_upper"]) & (history["band_upper"] < 1)).all()
    assert (history["band_width"] - (history["band_upper"] - history["band_lower"])).abs().max() < 1e-5
    metrics = result["stages"]["distill_student"]["metrics"]
    assert metrics["rougeL_gain"] == pytest.approx(metrics["rougeL_after"] - metrics["rougeL_before"], abs=1e-9)
    assert metrics["rougeL_gain_ci_low"] <= metrics["rougeL_gain"] <= metrics["rougeL_gain_ci_high"]
    assert metrics["rougeL_headroom"] == pytest.approx(metrics["rougeL_teacher"] - metrics["rougeL_before"], abs=1e-9)
    assert metrics["rougeL_headroom_ci_low"] <= metrics["rougeL_headroom"] <= metrics["rougeL_headroom_ci_high"]
    for who in ("teacher", "before", "after"):
        assert 0 <= metrics[f"repetition_share_{who}"] <= 1 and 0 <= metrics[f"distinct2_{who}"] <= 1

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    child = client.get_run(result["stages"]["distill_student"]["mlflow_run_id"])
    assert child.data.params["distill.method"] == "mgsr"
    for key in ("train/loss_sft", "train/loss_dac", "train/loss_span", "train/loss_band", "train/band_lower",
                "train/band_upper", "train/band_width", "train/band_mass", "train/band_coverage", "train/lr"):
        assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [1, 2, 3], key
    versions = client.search_model_versions("name='semflow-student'")
    assert [v.run_id for v in versions] == [child.info.run_id]
    assert versions[0].tags["method"] == "mgsr"
    assert {a.path for a in client.list_artifacts(child.info.run_id, "student")} >= {"student/model.safetensors", "student/config.json"}


def test_a_failure_mid_training_resumes_from_the_checkpoint_with_identical_weights(workdir, tmp_path, monkeypatch):
    crash_after_checkpoint(monkeypatch, "distill_student")
    with pytest.raises(RuntimeError, match="injected crash after distill_student checkpoint 2"):
        run(workdir)
    monkeypatch.undo()
    resumed = run(workdir)
    states = {k: v["state"] for k, v in resumed["stages"].items()}
    assert states == {"prepare_data": "Cached", "generate_teacher": "Cached", "init_student": "Cached",
                      "scrg_correct": "Cached", "distill_student": "Completed", "describe_documents": "Cached",
                      "cade_align": "Completed", "sedsi_index": "Completed"}
    assert resumed["stages"]["distill_student"]["metrics"]["resumed_from_step"] == 2

    straight = run(tmp_path / "straight")
    assert straight["stages"]["distill_student"]["metrics"]["resumed_from_step"] == 0
    from semflow.store import ArtifactStore

    def digest(result, root):
        info = result["stages"]["distill_student"]
        return ArtifactStore(root / "artifacts").manifest("distill_student", info["key"]).outputs["student"].digest

    assert digest(resumed, workdir) == digest(straight, tmp_path / "straight")
    # The finished stage removed its checkpoints.
    assert not list((workdir / "artifacts" / "distill_student").glob(".*.work"))


def test_empty_training_split_is_a_clear_error(workdir):
    with pytest.raises(DistillDataError, match="training split is empty"):
        run(workdir, "data.split.train=0", "data.split.val=0.5", "data.split.test=0.5")
    assert not (workdir / "artifacts" / "scrg_correct").exists() or not any((workdir / "artifacts" / "scrg_correct").iterdir())


def test_vocabulary_mismatch_fails_before_any_work(workdir, tmp_path):
    from components.models.tiny import build_tiny_model
    from semflow.config import TinyModelConfig

    model, tok = build_tiny_model(TinyModelConfig())
    tok.add_tokens(["<extra-token>"])
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    with pytest.raises(VocabularyMismatch, match="do not share a tokenizer vocabulary"):
        run(workdir, "student.init=spec", f"student.model.spec={tmp_path / 'other'}")


def test_long_prompts_fail_when_configured_and_are_counted_otherwise(workdir):
    # generation.on_long_prompt governs every stage that renders prompts; the first of them (teacher
    # generation) fails, naming the limit, and nothing downstream starts.
    with pytest.raises(PromptTooLongError, match="exceed generation.max_prompt_tokens=40") as raised:
        run(workdir, "generation.max_prompt_tokens=40", "generation.on_long_prompt=fail")
    assert failed_stage(raised.value) == "generate_teacher"
    assert not (workdir / "artifacts" / "scrg_correct").exists()
    # SCRG and distillation follow the same setting on their own (the teacher's responses exist here)
    with pytest.raises(DistillDataError, match="exceed generation.max_prompt_tokens=40"):
        tokenize_prompts(build_tiny_model(TinyModelConfig())[1], ["x" * 200], 40, "fail", ids=["p0"])
    result = run(workdir, "generation.max_prompt_tokens=40", "sedsi.enabled=false")
    assert result["stages"]["generate_teacher"]["metrics"]["prompts_truncated"] > 0
    assert result["stages"]["scrg_correct"]["metrics"]["prompts_truncated"] > 0


def test_off_policy_rows_pass_through_unless_configured(workdir):
    result = run(workdir, "scrg.on_policy=0.5", "sedsi.enabled=false")
    scrg = pd.read_parquet(f"{result['stages']['scrg_correct']['uri']}/scrg.parquet")
    teacher_rows = scrg[scrg["source"] == "teacher"]
    assert 0 < len(teacher_rows) < len(scrg)
    assert (teacher_rows["j"] == -1).all()
    assert all(list(a) == list(b) for a, b in zip(teacher_rows["revised_ids"], teacher_rows["original_ids"]))
    both = run(workdir, "scrg.on_policy=0.5", "scrg.correct_off_policy=true", "sedsi.enabled=false")
    scrg = pd.read_parquet(f"{both['stages']['scrg_correct']['uri']}/scrg.parquet")
    assert (scrg[scrg["source"] == "teacher"]["j"] >= 0).any()


def test_two_data_parallel_processes_train_the_same_student(workdir):
    """execution.distill_processes=2: the stage runs its training as 2 torchrun ranks (gloo on CPU) and
    follows the 1-process run's trajectory (losses weighted by label tokens, gradients all-reduced)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    one = run(workdir, "sedsi.enabled=false")["stages"]["distill_student"]
    kept = workdir.parent / "one-process"
    shutil.copytree(one["uri"], kept)
    shutil.rmtree(one["uri"])  # the next run rebuilds this very artifact (same key), now on 2 processes
    two = run(workdir, "sedsi.enabled=false", "execution.distill_processes=2")["stages"]["distill_student"]
    assert two["key"] == one["key"] and two["state"] == "Completed"

    h1, h2 = pd.read_parquet(kept / "history.parquet"), pd.read_parquet(f"{two['uri']}/history.parquet")
    assert list(h2["step"]) == list(h1["step"]) == [1, 2, 3]
    for column in ("loss", "grad_norm", "lr"):
        assert h2[column].tolist() == pytest.approx(h1[column].tolist(), rel=1e-3), column
    w1, w2 = load_file(kept / "student" / "model.safetensors"), load_file(f"{two['uri']}/student/model.safetensors")
    for name, tensor in w1.items():
        torch.testing.assert_close(w2[name], tensor, rtol=1e-3, atol=1e-3)

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    child = client.get_run(two["mlflow_run_id"])
    assert child.data.tags["semflow.train_processes"] == "2"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")] == [1, 2, 3]  # rank 0 only
    assert not (workdir / "artifacts" / "distill_student" / f"{two['key']}" / ".train_summary.json").exists()


def test_online_scrg_samples_during_training_and_needs_no_offline_table(workdir):
    """scrg_schedule online: every micro-batch's online share is sampled and corrected by the current
    student during training (counted), the distillation key ignores the SCRG table, and a resumed run
    would replay the same samples (seeded by the micro-batch index: two runs give the same weights)."""
    online = run(workdir, "sedsi.enabled=false", "distill.scrg_schedule=online")["stages"]["distill_student"]
    m = online["metrics"]
    # 3 steps of one micro-batch (4 rows, fewer at an epoch's end), round(half) of each resampled
    n = int(m["train_examples"])
    per_epoch = -(-n // 4)
    sizes = [min(4, n - (step % per_epoch) * 4) for step in range(3)]
    assert m["online_rows"] == sum(round(0.5 * k) for k in sizes) > 0
    assert 0 <= m["online_corrected"] <= m["online_rows"]
    assert m["train_supervised_share"] == 1.0  # the table rows are teacher responses; samples are never targets
    offline = run(workdir, "sedsi.enabled=false")["stages"]["distill_student"]
    assert offline["key"] != online["key"] and "online_rows" not in offline["metrics"]
    from semflow.store import ArtifactStore

    store = ArtifactStore(workdir / "artifacts")
    first = store.manifest("distill_student", online["key"]).outputs["student"].digest
    import shutil

    shutil.rmtree(online["uri"])
    again = run(workdir, "sedsi.enabled=false", "distill.scrg_schedule=online")["stages"]["distill_student"]
    assert again["state"] == "Completed" and store.manifest("distill_student", again["key"]).outputs["student"].digest == first


def test_compare_table_cis_reference_rows_and_mlflow_run(workdir, tmp_path):
    """semflow compare on the smoke preset: two methods x two seeds, run until distill_student only (no
    describe_documents, cade_align or sedsi_index), one table with the CI of each row against the best
    baseline, the reference rows, and one MLflow run holding the table and its chart."""
    import json
    import os

    from typer.testing import CliRunner

    from semflow.cli import app

    out = tmp_path / "compare.json"
    args = ["compare", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}", "--methods", "kd_fkl,mgsr-no-span",
            "--seeds", "0,1", "--json", str(out)]
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})  # not a terminal: the table must not be cut
    assert result.exit_code == 0, result.output
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before  # no tracking store leaks to later runs
    table = json.loads(out.read_text())
    assert [r["method"] for r in table["rows"]] == ["kd_fkl", "mgsr-no-span", "teacher", "healed init", "instruction echo"]
    assert table["best_baseline"] == "kd_fkl" and table["seeds"] == [0, 1]
    best = table["rows"][0]
    assert best["vs_best"] == 0 and best["ci_low"] == best["ci_high"] == 0  # a row against itself
    healed = next(r for r in table["rows"] if r["method"] == "healed init")
    assert healed["vs_init"] == 0 and healed["init_ci_low"] == healed["init_ci_high"] == 0
    for r in table["rows"]:
        assert r["ci_low"] <= r["vs_best"] <= r["ci_high"] and 0 <= r["repetition_share"] <= 1
        # against the healed row, not another one (pairing itself: test_compare_differences_are_paired_by_prompt)
        assert r["vs_init"] == pytest.approx(r["rougeL"] - healed["rougeL"], abs=1e-9)
        assert r["init_ci_low"] <= r["vs_init"] <= r["init_ci_high"]
    assert [r["seeds"] for r in table["rows"]] == [2, 2, 1, 1, 1]
    runs = table["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [("kd_fkl", 0), ("kd_fkl", 1), ("mgsr-no-span", 0),
                                                        ("mgsr-no-span", 1)]
    assert len({r["key"] for r in runs}) == 4  # each seed is its own distillation
    for stage in ("describe_documents", "cade_align", "sedsi_index"):
        assert not (workdir / "artifacts" / stage).exists(), f"compare ran {stage}"
    assert "95% CI" in result.output and "- healed init" in result.output and "instruction echo" in result.output
    for r in table["rows"]:  # every figure printed whole
        assert f"[{r['init_ci_low']:+.2f}, {r['init_ci_high']:+.2f}]" in result.output
        assert f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" in result.output

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("semflow").experiment_id],
                               "tags.`semflow.kind` = 'compare'")
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"compare.json", "compare.parquet", "compare.png"}
    assert run.data.metrics["kd_fkl.rougeL"] == pytest.approx(best["rougeL"])
    assert run.data.tags["semflow.best_baseline"] == "kd_fkl"

def test_compare_differences_are_paired_by_prompt():
    """A method answering exactly as the healed student differs from it by 0 on every prompt, so its
    difference and both ends of the CI are 0; unpaired (or paired with the wrong prompts) the healed
    student's uneven per-prompt scores would spread the interval. The same holds against the best baseline."""
    from flows.compare import summarise

    references = ["the cat sat on the mat", "a dog ran far away", "rain fell all day long"]
    healed = ["the cat sat on the mat", "a dog", "sun"]  # ROUGE-L 100, partial, 0: uneven per prompt
    rows, best = summarise({"seqkd": [healed, healed], "sft": [references, references]}, references,
                           echo=references, teacher=references, healed=healed, seeds=[0, 1], samples=2000)
    by = {r["method"]: r for r in rows}
    assert best == "sft"
    assert (by["seqkd"]["vs_init"], by["seqkd"]["init_ci_low"], by["seqkd"]["init_ci_high"]) == (0, 0, 0)
    assert (by["teacher"]["vs_best"], by["teacher"]["ci_low"], by["teacher"]["ci_high"]) == (0, 0, 0)
    assert by["sft"]["init_ci_low"] < by["sft"]["vs_init"] < by["sft"]["init_ci_high"]  # uneven gains: a real interval


@pytest.mark.parametrize("methods, message", [(",", "--methods names no method"),
                                              ("sft,nope", "unknown method(s) 'nope'"),
                                              ("sft,sft", "repeats a method")])
def test_compare_rejects_bad_method_lists_before_any_work(workdir, methods, message):
    from typer.testing import CliRunner

    from semflow.cli import app

    result = CliRunner().invoke(app, ["compare", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}",
                                      "--methods", methods])
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (workdir / "artifacts").exists()


def test_compare_fails_naming_the_field_when_no_reference_exists(workdir, tmp_path):
    import json

    from typer.testing import CliRunner

    from semflow.cli import app

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"say {i}", "input": "", "output": ""}) + "\n" for i in range(20)))
    result = CliRunner().invoke(app, [
        "compare", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}", "--methods", "sft",
        "--set", f"data.prompts={{kind: file, path: {data}, fields: {{reference: output}}}}"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "every test prompt's reference is empty" in text and "'output'" in text
    assert not (workdir / "artifacts").exists()
