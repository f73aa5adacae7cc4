from pathlib import Path

from typer.testing import CliRunner

from semflow.cli import app
from tests.conftest import SMOKE

runner = CliRunner()


def test_config_command_prints_defaults_and_rejects_bad_keys():
    ok = runner.invoke(app, ["config", "-c", str(SMOKE), "--set", "generation.max_new_tokens=5"])
    assert ok.exit_code == 0, ok.output
    assert "max_new_tokens: 5" in ok.output and "spec: tiny-random" in ok.output
    bad = runner.invoke(app, ["config", "-c", str(SMOKE), "--set", "generation.beams=2"])
    assert bad.exit_code == 2
    assert "generation.beams: unknown key" in bad.output


def test_stages_shows_cache_status_before_and_after_a_run(workdir):
    args = ["stages", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}"]
    before = runner.invoke(app, args)
    assert before.exit_code == 0, before.output
    assert "cached" not in before.output and before.output.count("to run") == 8, before.output
    run = runner.invoke(app, ["run", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}"])
    assert run.exit_code == 0, run.output
    flat = " ".join(run.output.split())  # the console folds long lines
    assert "after - before" in flat and "(95% CI" in flat and "4-gram repeated 3+ times" in flat, flat
    assert "SE-DSI " in flat and ".* Hits@1 on" in flat, flat
    after = runner.invoke(app, args)
    assert after.output.count("cached") == 8, after.output  # every stage, sedsi_index included


def test_run_summary_takes_its_verdict_from_the_ci_and_names_the_query_set():
    from semflow.cli.pipeline import findings

    def distill(lo, hi):
        return {"distill_student": {"metrics": {
            "test_prompts": 30.0, "rougeL_teacher": 0.25, "rougeL_before": 0.20, "rougeL_after": 0.22,
            "rougeL_gain": 0.02, "rougeL_gain_ci_low": lo, "rougeL_gain_ci_high": hi,
            "repetition_share_teacher": 0.1, "repetition_share_before": 0.5, "repetition_share_after": 0.3,
            "distinct2_teacher": 0.7, "distinct2_before": 0.4, "distinct2_after": 0.5}}}

    assert findings(distill(0.01, 0.03))[0].endswith("+2.0 (95% CI +1.0 to +3.0): better than before")
    assert findings(distill(-0.03, -0.01))[0].endswith("worse than before")
    assert findings(distill(-0.01, 0.03))[0].endswith("no difference the CI can show")
    assert "teacher 10%, before 50%, after 30%" in findings(distill(0.01, 0.03))[1]
    ceiling = distill(0.01, 0.03)
    ceiling["distill_student"]["metrics"].update(rougeL_headroom=0.05, rougeL_headroom_ci_low=-0.01,
                                                 rougeL_headroom_ci_high=0.11)
    assert findings(ceiling)[1] == "  teacher - before +5.0 (95% CI -1.0 to +11.0): what a student writing its teacher's answers would show"
    sedsi = {f"{q}.{s}.hits_at_1": v for q in ("pseudo", "labelled") for s, v in
             (("sedsi", 0.5), ("bm25", 0.75), ("hybrid", 0.625))}
    lines = findings({"sedsi_index": {"metrics": {**sedsi, "labelled.queries": 8.0, "pseudo.queries": 16.0}}})
    assert [line.split(" Hits@1")[0] for line in lines] == ["SE-DSI labelled.*", "SE-DSI pseudo.*"]
    assert lines[0].endswith("sedsi 0.50, bm25 0.75, hybrid 0.62") and "8 queries" in lines[0]
    assert findings({"prepare_data": {"metrics": {"prompts.rows": 3.0}}}) == []


def test_init_student_prunes_and_saves(tmp_path):
    out = tmp_path / "student"
    result = runner.invoke(app, ["init-student", "-c", str(SMOKE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "student: 1 layers" in result.output and "teacher 2 layers" in result.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_deploy_and_worker_wrap_prefects_own_commands(tmp_path):
    from semflow.team import deploy_commands, worker_command

    commands = [c[1:] for c in deploy_commands(Path("prefect.yaml"), gpu_concurrency=1)]
    assert commands == [
        ["work-pool", "create", "semflow-cpu", "--type", "process", "--overwrite"],
        ["work-pool", "create", "semflow-gpu", "--type", "process", "--overwrite"],
        ["work-pool", "set-concurrency-limit", "semflow-gpu", "1"],
        ["--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml"],
    ]
    assert worker_command("gpu", "gpu-box-1", 2)[1:] == [
        "worker", "start", "--pool", "semflow-gpu", "--type", "process", "--name", "gpu-box-1", "--limit", "2"]
    wrong = CliRunner().invoke(app, ["worker", "--pool", "tpu"])
    assert wrong.exit_code == 2 and "expected one of cpu, gpu" in wrong.output
    missing = CliRunner().invoke(app, ["deploy", "--prefect-file", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "no such file" in " ".join(missing.output.split())


def test_prefect_yaml_deploys_the_pipeline_on_cpu_and_each_pool_stage_on_gpu():
    import yaml

    from semflow.dag import POOL_STAGES

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert by_name["pipeline"]["work_pool"]["name"] == "semflow-cpu"
    assert by_name["pipeline"]["schedules"][0]["active"] is False
    for stage in POOL_STAGES:  # the names flows/stage.dispatch starts: semflow-stage/<stage>
        d = by_name[stage]
        assert d["entrypoint"] == "flows/stage.py:run_stage_flow" and d["parameters"] == {"stage_name": stage}
        assert d["work_pool"]["name"] == "semflow-gpu" and "CUDA_VISIBLE_DEVICES" in d["work_pool"]["job_variables"]["env"]
