"""Distillation commands: compare (methods side by side), init-student."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from semflow.cli.common import ConfigOpt, SetOpt, app, console, load
from semflow.runtime import tracking_uri


@app.command()
def compare(
    methods: Annotated[str, typer.Option(help="comma-separated distill.method values")] = "mgsr,sft,seqkd,kd_fkl",
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the table as JSON")] = None,
) -> None:
    """Distil with several methods on the same data and print one ROUGE-L table (logged to MLflow too).

    Upstream stages are shared through the cache, so only SCRG (for mgsr) and distillation run per method."""
    cfg = load(config, overrides)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    for name in names:  # validate every method before spending time on the first
        load(config, [*(overrides or []), f"distill.method={name}"])
    from flows.pipeline import pipeline

    rows = []
    for name in names:
        result = pipeline(str(config), [*(overrides or []), f"distill.method={name}"])
        m = result["stages"]["distill_student"]["metrics"]
        rows.append({
            "method": name, "rougeL_teacher": m["rougeL_teacher"], "rougeL_before": m["rougeL_before"],
            "rougeL_after": m["rougeL_after"], "gain": m["rougeL_after"] - m["rougeL_before"],
            "train_seconds": m["train_seconds"], "final_loss": m["final_loss"],
            "test_prompts": m["test_prompts"], "mlflow_run_id": result["stages"]["distill_student"]["mlflow_run_id"],
        })
    table = Table(title=f"distillation methods on {config} (ROUGE-L F, test split)")
    for column in ("method", "teacher", "before", "after", "gain", "train s", "final loss"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        table.add_row(r["method"], f"{r['rougeL_teacher']:.4f}", f"{r['rougeL_before']:.4f}", f"{r['rougeL_after']:.4f}",
                      f"{r['gain']:+.4f}", f"{r['train_seconds']:.0f}", f"{r['final_loss']:.3f}")
    console.print(table)
    console.print(f"test prompts: {int(rows[0]['test_prompts'])}")

    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    # A client bound to the store, not mlflow.set_tracking_uri: that would export MLFLOW_TRACKING_URI
    # to everything that runs later in this process.
    client = MlflowClient(tracking_uri(cfg.runtime))
    experiment = client.get_experiment_by_name(cfg.runtime.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(cfg.runtime.experiment)
    run = client.create_run(experiment_id, run_name=f"compare-{cfg.name}",
                            tags={"semflow.kind": "compare", "semflow.methods": ",".join(names)})
    client.log_table(run.info.run_id, pd.DataFrame(rows), artifact_file="compare.json")
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[
        Metric(f"{r['method']}.{k}", r[k], now, 0) for r in rows for k in ("rougeL_after", "gain")
    ])
    client.set_terminated(run.info.run_id)
    console.print(f"MLflow comparison run: {run.info.run_id}")
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2))


@app.command("init-student")
def init_student(
    out: Annotated[Path, typer.Option(help="directory to write the student model to")],
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Build the student the config describes (pruned from the teacher or loaded) and save it."""
    cfg = load(config, overrides)
    from components.models import build_student, load_model

    teacher = load_model(cfg.teacher, cfg.runtime.model_cache)
    student = build_student(cfg.student, teacher, cfg.runtime.model_cache)
    model, tokenizer = student.model, student.tokenizer
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    console.print(
        f"student: {model.config.num_hidden_layers} layers, {count(model) / 1e6:.1f}M parameters "
        f"(teacher {teacher.model.config.num_hidden_layers} layers, {count(teacher.model) / 1e6:.1f}M) -> {out}"
    )


