"""The cade_align stage on the smoke preset: artifacts, MLflow tables, metrics and plots, the slices built
from matching prompts, the self-check, the CLI over them, and bad input."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from components.cade import CadeError, load_alignment, sentences_from_texts
from flows.pipeline import failed_stage, pipeline
from semflow.cli import app
from tests.conftest import SMOKE

runner = CliRunner()


def run(workdir, *overrides):
    """The smoke preset (CADE's fixed epochs, the context measure, the self-check on)."""
    return pipeline(str(SMOKE), [f"runtime.workdir={workdir}", *overrides])


def test_cade_stage_outputs_tracking_and_cli(workdir):
    result = run(workdir)
    info = result["stages"]["cade_align"]
    alignment = load_alignment(f"{info['uri']}/embeddings")
    # the generated slices hold only the test prompts' texts; the smoke teacher/students write a few
    # random bytes, too little text, left out with a warning; the references are the dataset's own text,
    # enough to keep
    evaluation = pd.read_parquet(f"{result['stages']['distill_student']['uri']}/eval.parquet")
    assert sum(map(len, sentences_from_texts(evaluation["reference"]))) >= 50
    assert alignment.names == ["news", "encyclopedia", "references"]
    assert info["metrics"]["slices_skipped"] == 3
    # the context measure reads the texts the slices were trained on, saved with the embeddings; it needs
    # no split-half replicates, and the preset trains none
    assert all(alignment.texts[n] and alignment.replicates[n] == [] for n in alignment.names)
    shifts = pd.read_parquet(f"{info['uri']}/shifts.parquet")
    assert {"word", "shift", "z", "q", "cosine", "count_a", "count_b", "neighbours_a", "neighbours_b", "slice_a",
            "slice_b", "measure"} <= set(shifts.columns)
    assert set(zip(shifts.slice_a, shifts.slice_b)) == {("news", "encyclopedia")}
    assert set(shifts["measure"]) == {"context"} and shifts["q"].between(0, 1).all()
    assert list(zip(-shifts["z"], -shifts["shift"])) == sorted(zip(-shifts["z"], -shifts["shift"]))
    overlap = pd.read_parquet(f"{info['uri']}/overlap.parquet")
    assert len(overlap) == 3

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    child = client.get_run(info["mlflow_run_id"])
    tags = child.data.tags
    # the generated slices are the answers to distill_student's test prompts, every one of them
    assert tags["semflow.cade.generated_prompts"] == f"test prompts of distill_student's eval table ({len(evaluation)})"
    for slice_name, column in (("teacher", "teacher"), ("student_before", "student_before"), ("student_after", "student_after")):
        tokens = sum(map(len, sentences_from_texts(evaluation[column])))
        assert f"{slice_name} ({tokens} tokens < 50)" in tags["semflow.cade.skipped"]
    # the self-check ran on the focus pair and is a metric; low recall comes with a warning
    recall = child.data.metrics["self_check_recall.news_vs_encyclopedia"]
    selfcheck = pd.read_parquet(f"{info['uri']}/selfcheck.parquet")
    assert len(selfcheck) == 4 and set(selfcheck["planted_in"]) == {"news"}
    assert recall == pytest.approx(selfcheck["found"].mean())
    assert tags["semflow.cade.self_check"] == ("low recall" if recall < 0.5 else "ok")
    assert ("self-check news vs encyclopedia" in tags["semflow.cade.warnings"]) == (recall < 0.5)
    assert child.data.metrics["compared_words.news_vs_encyclopedia"] > 30
    plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
    assert "plots/overlap.png" in plots and any(p.startswith("plots/neighbours_") for p in plots)
    assert {a.path for a in client.list_artifacts(child.info.run_id, "preview")} >= {"preview/shifts.json",
                                                                                      "preview/selfcheck.json"}

    base = ["-c", str(SMOKE), "--set", f"runtime.workdir={workdir}"]
    shift = runner.invoke(app, ["shift", "news", "encyclopedia", "--top", "3", "--min-count", "2", *base])
    assert shift.exit_code == 0, shift.output
    assert "most shifted words, news vs encyclopedia, by context" in shift.output
    assert "q < 0.05: a shift at a 5% false discovery rate" in shift.output
    assert "null: each word's texts relabelled between the slices at random" in shift.output
    assert "self-check (cade_align):" in shift.output and "planted swaps in news" in shift.output
    few = runner.invoke(app, ["shift", "news", "encyclopedia", "--top", "500", "--min-count", "2", *base])
    assert few.exit_code == 0 and "of --top 500 rows: only" in few.output and "'news' (" in few.output
    cosine = runner.invoke(app, ["shift", "news", "encyclopedia", "--measure", "cosine", "--min-count", "2", *base])
    assert cosine.exit_code == 0 and "by cosine" in cosine.output
    # split_half needs replicates, which this run did not train: it says so and ranks by cosine
    split = runner.invoke(app, ["shift", "news", "encyclopedia", "--measure", "split_half", "--min-count", "2", *base])
    assert split.exit_code == 0 and "by cosine" in split.output and "no split-half replicates" in split.output
    word = shifts[(shifts.slice_a == "news") & (shifts.slice_b == "encyclopedia")]["word"].iloc[0]
    near = runner.invoke(app, ["neighbours", word, "--slices", "news", "--slices", "encyclopedia", "--min-count", "1", *base])
    assert near.exit_code == 0 and f"neighbours of {word!r}" in near.output
    unknown_slice = runner.invoke(app, ["shift", "news", "tabloids", *base])
    assert unknown_slice.exit_code == 2 and "tabloids" in unknown_slice.output
    bad_measure = runner.invoke(app, ["shift", "news", "encyclopedia", "--measure", "euclid", *base])
    assert bad_measure.exit_code == 2 and "--measure 'euclid'" in bad_measure.output
    absent = runner.invoke(app, ["neighbours", "zzzzqx", *base])
    assert absent.exit_code == 2 and "zzzzqx" in absent.output and "news" in absent.output


def test_cli_without_a_cade_run_says_so(workdir):
    out = runner.invoke(app, ["shift", "news", "encyclopedia", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}"])
    assert out.exit_code == 2 and "no cade_align artifact" in out.output


def test_unknown_slice_in_config_fails_before_training_and_writes_nothing(workdir):
    with pytest.raises(CadeError, match=r"unknown slice\(s\) \['tabloids'\]") as raised:
        run(workdir, "cade.slices=[news, tabloids]")
    assert failed_stage(raised.value) == "cade_align"  # the stage's own error, with a note naming it
    cade_dir = workdir / "artifacts" / "cade_align"
    assert not cade_dir.exists() or not any(cade_dir.iterdir())
