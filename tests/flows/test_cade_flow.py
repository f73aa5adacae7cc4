"""The cade_align stage on the smoke preset: artifacts, MLflow tables and plots, the CLI over them,
and bad input."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from components.cade import CadeError, load_alignment
from flows.pipeline import pipeline
from semflow.cli import app
from tests.conftest import SMOKE

runner = CliRunner()


def run(workdir, *overrides):
    return pipeline(str(SMOKE), [f"runtime.workdir={workdir}", *overrides])


def test_cade_stage_outputs_tracking_and_cli(workdir):
    result = run(workdir)
    info = result["stages"]["cade_align"]
    alignment = load_alignment(f"{info['uri']}/embeddings")
    # the smoke teacher/students write a few random bytes: too little text, left out with a warning
    assert alignment.names == ["news", "encyclopedia", "references"]
    assert info["metrics"]["slices_skipped"] == 3
    shifts = pd.read_parquet(f"{info['uri']}/shifts.parquet")
    assert {"word", "cosine", "count_a", "count_b", "neighbours_a", "neighbours_b", "slice_a", "slice_b"} <= set(shifts.columns)
    assert set(zip(shifts.slice_a, shifts.slice_b)) <= {("news", "encyclopedia"), ("news", "references"), ("encyclopedia", "references")}
    overlap = pd.read_parquet(f"{info['uri']}/overlap.parquet")
    assert len(overlap) == 3

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    child = client.get_run(info["mlflow_run_id"])
    assert "teacher" in child.data.tags["semflow.cade.skipped"]
    plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
    assert "plots/overlap.png" in plots and any(p.startswith("plots/neighbours_") for p in plots)
    assert {a.path for a in client.list_artifacts(child.info.run_id, "preview")} >= {"preview/shifts.json"}

    base = ["-c", str(SMOKE), "--set", f"runtime.workdir={workdir}"]
    shift = runner.invoke(app, ["shift", "news", "encyclopedia", "--top", "3", "--min-count", "2", *base])
    assert shift.exit_code == 0, shift.output
    assert "most shifted words, news vs encyclopedia" in shift.output
    word = shifts[(shifts.slice_a == "news") & (shifts.slice_b == "encyclopedia")]["word"].iloc[0]
    near = runner.invoke(app, ["neighbours", word, "--slices", "news", "--slices", "encyclopedia", "--min-count", "1", *base])
    assert near.exit_code == 0 and f"neighbours of {word!r}" in near.output
    unknown_slice = runner.invoke(app, ["shift", "news", "tabloids", *base])
    assert unknown_slice.exit_code == 2 and "tabloids" in unknown_slice.output
    absent = runner.invoke(app, ["neighbours", "zzzzqx", *base])
    assert absent.exit_code == 2 and "zzzzqx" in absent.output and "news" in absent.output


def test_cli_without_a_cade_run_says_so(workdir):
    out = runner.invoke(app, ["shift", "news", "encyclopedia", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}"])
    assert out.exit_code == 2 and "no cade_align artifact" in out.output


def test_unknown_slice_in_config_fails_before_training_and_writes_nothing(workdir):
    with pytest.raises(CadeError, match=r"unknown slice\(s\) \['tabloids'\]"):
        run(workdir, "cade.slices=[news, tabloids]")
    cade_dir = workdir / "artifacts" / "cade_align"
    assert not cade_dir.exists() or not any(cade_dir.iterdir())
