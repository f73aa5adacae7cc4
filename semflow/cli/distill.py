"""Distillation commands: compare (methods side by side), init-student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from semflow.cli.common import ConfigOpt, SetOpt, app, console, fail, load
from flows.compare import METHODS


@app.command()
def compare(
    methods: Annotated[str, typer.Option(help="comma-separated: distill.method values and MGSR ablations "
                                         "(mgsr-no-scrg, mgsr-fkl, mgsr-no-span, mgsr-fixed-band)")] = ",".join(METHODS),
    seeds: Annotated[str, typer.Option(help="comma-separated seeds (distill.train.seed and scrg.seed)")] = "0,1,2",
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the table as JSON")] = None,
) -> None:
    """Distil with every method on the same data and seeds; print one ROUGE-L table with paired bootstrap
    95 % CIs against the best baseline and against the healed init every method starts from, the teacher,
    the healed init and an instruction echo (logged to MLflow as one comparison run).

    Only what a method changes runs per method: the pipeline until distill_student (SCRG and
    distillation); data prep, teacher answers and the healed student come from the cache."""
    from flows.compare import CompareInputError, compare as run_compare, log_comparison, parse_methods, parse_seeds, to_json

    try:  # bad input fails here, before any work
        names, seed_list = parse_methods(methods), parse_seeds(seeds)
    except CompareInputError as err:
        raise fail(str(err)) from None
    cfg = load(config, overrides)
    for name in names:  # every method's config validates before the first one runs
        from flows.compare import method_overrides

        load(config, [*(overrides or []), *method_overrides(name, seed_list[0])])
    try:
        table = run_compare(str(config), list(overrides or []), names, seed_list,
                            progress=lambda m, s: console.print(f"[dim]{m}, seed {s}[/dim]"))
    except CompareInputError as err:
        raise fail(str(err)) from None
    show(table, config)
    run_id = log_comparison(cfg, table, str(config))
    console.print(f"MLflow comparison run: {run_id}")
    if json_out:
        json_out.write_text(to_json(table))


def show(table, config) -> None:
    fmt = lambda v, spec="+.2f": "" if v is None else format(v, spec)  # noqa: E731
    out = Table(title=f"distillation on {config}: ROUGE-L x100 on {table.scored_prompts} test prompts with references, "
                f"mean over seeds {','.join(map(str, table.seeds))}")
    for column in ("method", "kind", "seeds", "ROUGE-L", "sd (seeds)", f"- {table.best_baseline}", "95% CI",
                   "- healed init", "95% CI ", "repeats 4-gram", "distinct-2"):
        out.add_column(column, justify="left" if column in ("method", "kind") else "right")
    interval = lambda low, high: "" if low is None else f"[{low:+.2f}, {high:+.2f}]"  # noqa: E731
    for r in table.rows:
        out.add_row(r["method"], r["kind"], str(r["seeds"]), f"{r['rougeL']:.2f}", f"{r['rougeL_seed_std']:.2f}",
                    fmt(r["vs_best"]), interval(r["ci_low"], r["ci_high"]), fmt(r["vs_init"]),
                    interval(r["init_ci_low"], r["init_ci_high"]), f"{r['repetition_share']:.2f}",
                    f"{r['distinct_2']:.2f}")
    if console.is_terminal:
        console.print(out)
    else:  # a file or a pipe: rich would squeeze the eleven columns into 80 characters and cut every number
        wide = console.measure(out, options=console.options.update_width(10_000)).maximum
        Console(width=max(console.width, wide)).print(out)
    if table.scored_prompts < table.test_prompts:
        console.print(f"{table.test_prompts - table.scored_prompts} test prompts have no reference and are not scored")


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


