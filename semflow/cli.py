"""The `semflow` command line: run the pipeline, see stage cache status, open the UIs.

    semflow run --config configs/default.yaml --set generation.max_new_tokens=64
    semflow stages --config configs/default.yaml
    semflow ui --config configs/default.yaml
    semflow init-student --config configs/default.yaml --out student/
    semflow config --config configs/smoke.yaml
    semflow compare --config configs/default.yaml --methods mgsr,sft,seqkd,kd_fkl
    semflow shift teacher student_after --top 20
    semflow neighbours court --slices news --slices encyclopedia
    semflow search "who built the first telescope" --k 10
    semflow index add new_docs.jsonl
    semflow deploy && semflow worker --pool cpu        # a team: see README, "Running for a team"
    semflow resume [FLOW_RUN_ID]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from semflow.config import ConfigError, PipelineConfig, load_config
from semflow.runtime import artifact_root, prefect_home, prepare_environment, redact, tracking_uri

app = typer.Typer(add_completion=False, no_args_is_help=True, help="semflow: distil, analyse and index with LMs.")
console = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML preset, e.g. configs/default.yaml")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override KEY=VALUE (repeatable)")]


def _load(config: Path, overrides: list[str] | None) -> PipelineConfig:
    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    prepare_environment(cfg.runtime)
    return cfg


@app.command()
def run(config: ConfigOpt = Path("configs/default.yaml"), overrides: SetOpt = None) -> None:
    """Run the pipeline; unchanged stages come back Cached."""
    cfg = _load(config, overrides)
    from flows.pipeline import pipeline  # imports Prefect, which reads PREFECT_HOME set above

    _report(cfg, config, pipeline(str(config), overrides or []))


def _report(cfg: PipelineConfig, config: Path, result: dict) -> None:
    table = Table(title=f"semflow pipeline ({cfg.name})")
    for column in ("stage", "state", "key"):
        table.add_column(column, no_wrap=True)
    for stage, info in result["stages"].items():
        table.add_row(stage, info["state"], info["key"])
    console.print(table)
    for stage, info in result["stages"].items():
        headline = {k: v for k, v in info["metrics"].items()
                    if "." not in k or k.endswith((".rows", "hits_at_10", "collision_rate"))}
        console.print(f"{stage}: " + ", ".join(f"{k}={v:.4g}" for k, v in headline.items()))
    console.print(f"artifacts: {artifact_root(cfg.runtime)}")
    console.print(f"MLflow:    {redact(tracking_uri(cfg.runtime))} (parent run {result['mlflow_run_id']})")
    console.print("UIs:       semflow ui --config " + str(config))


@app.command()
def stages(config: ConfigOpt = Path("configs/default.yaml"), overrides: SetOpt = None) -> None:
    """Each stage with its cache key and whether its artifact is already built."""
    cfg = _load(config, overrides)
    from semflow.store import ArtifactStore
    from tasks import (cade_align, distill_student, generate_teacher, init_student, prepare_data, scrg_correct,
                       sedsi_index)

    store = ArtifactStore(artifact_root(cfg.runtime))
    table = Table(title=f"stages for {config}")
    for column in ("stage", "key", "status", "artifact"):
        table.add_column(column)

    def show(stage: str, key: str | None) -> object:
        manifest = store.manifest(stage, key) if key else None
        status = "[green]cached[/green]" if manifest else ("to run" if key else "to run (after upstream)")
        table.add_row(stage, key or "-", status, manifest.uri if manifest else "")
        return manifest

    data = show(prepare_data.STAGE, prepare_data.cache_key(cfg.data))
    responses = show(
        generate_teacher.STAGE, generate_teacher.cache_key(cfg.teacher, cfg.generation, data) if data else None
    )
    initial = show(init_student.STAGE, init_student.cache_key(
        cfg.teacher, cfg.student, cfg.generation, cfg.distill, responses) if responses else None)
    revised = None
    if cfg.distill.method == "mgsr":
        revised = show(scrg_correct.STAGE, scrg_correct.cache_key(
            cfg.teacher, cfg.generation, cfg.scrg, responses, initial, cfg.distill.on_long_prompt) if initial else None)
    ready = initial is not None and (revised is not None or cfg.distill.method != "mgsr")
    student = show(distill_student.STAGE, distill_student.cache_key(
        cfg.teacher, cfg.generation, cfg.distill, responses, initial, revised) if ready else None)
    show(cade_align.STAGE, cade_align.cache_key(cfg.cade, data, responses, student) if student else None)
    if cfg.sedsi.enabled:
        own_backbone = cfg.sedsi.backbone is not None  # else the distilled student is the backbone
        show(sedsi_index.STAGE, sedsi_index.cache_key(cfg.teacher, cfg.generation, cfg.sedsi, data,
                                                      None if own_backbone else student)
             if data and (own_backbone or student) else None)
    console.print(table)


@app.command()
def compare(
    methods: Annotated[str, typer.Option(help="comma-separated distill.method values")] = "mgsr,sft,seqkd,kd_fkl",
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the table as JSON")] = None,
) -> None:
    """Distil with several methods on the same data and print one ROUGE-L table (logged to MLflow too).

    Upstream stages are shared through the cache, so only SCRG (for mgsr) and distillation run per method."""
    cfg = _load(config, overrides)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    for name in names:  # validate every method before spending time on the first
        _load(config, [*(overrides or []), f"distill.method={name}"])
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


def _alignment(cfg: PipelineConfig, run_id: str | None):
    """The embeddings of the newest cade_align artifact, or of the one an MLflow run id produced."""
    from components.cade import load_alignment
    from semflow.store import ArtifactStore, local_dir

    store = ArtifactStore(artifact_root(cfg.runtime))
    manifests = store.manifests("cade_align")
    if run_id:
        manifests = [m for m in manifests if m.mlflow_run_id == run_id]
    if not manifests:
        which = f"from MLflow run {run_id}" if run_id else "yet"
        console.print(f"[red]no cade_align artifact {which} under {store.root}[/red]: run the pipeline first")
        raise typer.Exit(2)
    latest = max(manifests, key=lambda m: m.created)
    return load_alignment(local_dir(latest) / latest.output("embeddings").path), latest


RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="MLflow run id of a cade_align stage run")]


@app.command()
def shift(
    slice_a: Annotated[str, typer.Argument(help="first slice, e.g. teacher")],
    slice_b: Annotated[str, typer.Argument(help="second slice, e.g. student_after")],
    top: Annotated[int, typer.Option(help="how many words")] = 20,
    min_count: Annotated[int, typer.Option(help="only words this frequent in both slices")] = 5,
    keep_stopwords: Annotated[bool, typer.Option(help="list function words too")] = False,
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    run_id: RunIdOpt = None,
) -> None:
    """The words whose use differs most between two slices (lowest cosine across the aligned spaces)."""
    cfg = _load(config, overrides)
    from components.cade import CadeError, most_shifted

    alignment, manifest = _alignment(cfg, run_id)
    try:
        from gensim.parsing.preprocessing import STOPWORDS

        table = most_shifted(alignment, slice_a, slice_b, top=top, min_count=min_count, topn=5,
                             exclude=() if keep_stopwords else STOPWORDS)
    except CadeError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    out = Table(title=f"most shifted words, {slice_a} vs {slice_b} (cade_align {manifest.key})")
    for column in ("word", "cosine", f"count {slice_a}", f"count {slice_b}", f"neighbours {slice_a}", f"neighbours {slice_b}"):
        out.add_column(column)
    for row in table.itertuples(index=False):
        r = row._asdict()
        out.add_row(r["word"], f"{r['cosine']:.3f}", str(r["count_a"]), str(r["count_b"]),
                    str(r["neighbours_a"]), str(r["neighbours_b"]))
    console.print(out)


@app.command()
def neighbours(
    word: Annotated[str, typer.Argument(help="the word to look up")],
    slices: Annotated[list[str] | None, typer.Option("--slices", help="slices to compare (repeat or list)")] = None,
    topn: Annotated[int, typer.Option(help="neighbours per slice")] = 10,
    min_count: Annotated[int, typer.Option(help="only neighbours this frequent in their slice")] = 5,
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    run_id: RunIdOpt = None,
) -> None:
    """A word's nearest neighbours in each slice, side by side (rare words barely leave their random
    start, hence the frequency floor)."""
    cfg = _load(config, overrides)
    from components.cade import CadeError
    from components.cade import neighbours as find_neighbours

    alignment, manifest = _alignment(cfg, run_id)
    try:
        table = find_neighbours(alignment, word, slices=slices or None, topn=topn, min_count=min_count)
    except CadeError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    out = Table(title=f"neighbours of {word!r} (cade_align {manifest.key})")
    names = list(dict.fromkeys(table["slice"]))
    out.add_column("rank")
    for name in names:
        out.add_column(f"{name} ({alignment.count(name, word)}x)")
    for rank, group in table.groupby("rank", sort=True):
        cells = {r.slice: f"{r.neighbour} {r.cosine:.2f}" for r in group.itertuples()}
        out.add_row(str(rank), *[cells.get(n, "") for n in names])
    console.print(out)


def _index_manifest(cfg: PipelineConfig, run_id: str | None):
    """The newest index artifact (pipeline-built or grown by `index add`), or the one an MLflow run produced."""
    from tasks.sedsi_index import index_manifests

    manifests = index_manifests(artifact_root(cfg.runtime))
    if run_id:
        manifests = [m for m in manifests if m.mlflow_run_id == run_id]
    if not manifests:
        which = f"from MLflow run {run_id}" if run_id else "yet"
        console.print(f"[red]no SE-DSI index {which} under {artifact_root(cfg.runtime)}[/red]: run the pipeline "
                      "with sedsi.enabled (the default) first")
        raise typer.Exit(2)
    return manifests[-1]


IndexRunOpt = Annotated[str | None, typer.Option("--run", "--run-id", help="MLflow run id of an index build or add")]


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("--k", help="documents to list")] = 10,
    beams: Annotated[int | None, typer.Option(help="beam width (default: sedsi.num_beams)")] = None,
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    run_id: IndexRunOpt = None,
) -> None:
    """Search the SE-DSI index: the documents whose identifiers (EDs) the model decodes for the query."""
    cfg = _load(config, overrides)
    from components.models import pick_device
    from components.sedsi import SedsiIndex
    from semflow.store import local_dir

    manifest = _index_manifest(cfg, run_id)
    index = SedsiIndex.load(local_dir(manifest) / manifest.output("index").path, pick_device(cfg.teacher.device))
    hits = index.search([query], k=k, num_beams=beams or cfg.sedsi.num_beams)[0]
    console.print(f"index {manifest.stage}/{manifest.key}: {len(index.doc_ids)} documents")
    out = Table(title=repr(query))
    for column in ("rank", "doc_id", "title", "ED", "log-prob"):
        out.add_column(column)
    for rank, hit in enumerate(hits, 1):
        out.add_row(str(rank), hit.doc_id, hit.title, hit.ed, f"{hit.score:.3f}")
    console.print(out if hits else "[yellow]no document decoded[/yellow]")


index_app = typer.Typer(no_args_is_help=True, help="Grow the SE-DSI index.")
app.add_typer(index_app, name="index")


@index_app.command("add")
def index_add(
    documents: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet with doc_id, text (and title)")],
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    run_id: IndexRunOpt = None,
) -> None:
    """Index new documents without retraining from scratch: EDs for them, the trie extended, the model
    fine-tuned on their pairs plus a replay sample of old pairs; prints forgetting on old queries."""
    cfg = _load(config, overrides)
    from components.data import DataError
    from semflow.tracking import run_context
    from tasks.sedsi_index import add_to_index

    if not documents.is_file():
        console.print(f"[red]{documents}: no such file[/red]")
        raise typer.Exit(2)
    parent = _index_manifest(cfg, run_id)
    try:
        manifest = add_to_index(cfg.teacher, cfg.generation, cfg.sedsi, parent, str(documents), run_context(cfg))
    except (DataError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    m = manifest.metrics
    out = Table(title=f"index add: {documents} -> {manifest.stage} {manifest.key} (MLflow run {manifest.mlflow_run_id})")
    for column in ("queries", "Hits@10", "MRR@10", "n"):
        out.add_column(column)
    for name, label in (("old_before", "old documents, before"), ("old_after", "old documents, after"),
                        ("new_after", "new documents, after")):
        if f"{name}.hits_at_10" in m:
            out.add_row(label, f"{m[f'{name}.hits_at_10']:.3f}", f"{m[f'{name}.mrr_at_10']:.3f}",
                        str(int(m[f"{name}.queries"])))
    console.print(out)
    console.print(f"added {int(m['documents_added'])} documents; trained on {int(m['pairs_new'])} new pairs + "
                  f"{int(m['pairs_replayed'])} replayed; forgetting (Hits@10 drop): {m.get('forgetting.hits_at_10', float('nan')):.3f}")


@app.command("config")
def show_config(config: ConfigOpt = Path("configs/default.yaml"), overrides: SetOpt = None) -> None:
    """Print the validated config with every default filled in."""
    cfg = _load(config, overrides)
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")


@app.command("init-student")
def init_student(
    out: Annotated[Path, typer.Option(help="directory to write the student model to")],
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Build the student the config describes (pruned from the teacher or loaded) and save it."""
    cfg = _load(config, overrides)
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


@app.command()
def ui(
    config: ConfigOpt = Path("configs/default.yaml"),
    mlflow_port: int = 5000,
    prefect_port: int = 4200,
) -> None:
    """Start the MLflow UI and the Prefect server on 127.0.0.1 over this config's stores."""
    cfg = _load(config, None)
    uri = tracking_uri(cfg.runtime)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PREFECT_HOME=str(prefect_home(cfg.runtime)))
    procs = [
        subprocess.Popen(
            [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(mlflow_port)],
            env=env,
        ),
        subprocess.Popen(
            [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            env=env,
        ),
    ]
    console.print(f"MLflow UI:  http://127.0.0.1:{mlflow_port}  (store {redact(uri)})")
    console.print(f"Prefect UI: http://127.0.0.1:{prefect_port}  (PREFECT_HOME {prefect_home(cfg.runtime)})")
    console.print("Ctrl-C stops both.")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=30)
    failed = [p.args[0] for p in procs if p.returncode not in (0, -signal.SIGINT, 130)]
    if failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- team
@app.command()
def deploy(
    prefect_file: Annotated[Path, typer.Option(help="the deployments to register")] = Path("prefect.yaml"),
    gpu_concurrency: Annotated[int | None, typer.Option(help="flow runs the GPU pool runs at once")] = None,
) -> None:
    """Create the work pools semflow-cpu and semflow-gpu and register every deployment in prefect.yaml
    (on the Prefect API that PREFECT_API_URL names). Run it from the checkout the workers will use."""
    from semflow.team import deploy_commands, run_checked

    if not prefect_file.is_file():
        console.print(f"[red]{prefect_file}: no such file[/red] (run from the repository root)")
        raise typer.Exit(2)
    # run beside prefect.yaml: its pull step records that folder as the workers' working directory
    for command in deploy_commands(Path(prefect_file.name), gpu_concurrency):
        console.print("[dim]$ " + " ".join(command[1:]) + "[/dim]")
        try:
            run_checked(command, cwd=prefect_file.resolve().parent)
        except RuntimeError as err:
            console.print(f"[red]{err}[/red]")
            raise typer.Exit(1) from None


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="cpu: the pipeline flow; gpu: the heavy stages")] = "cpu",
    name: Annotated[str | None, typer.Option(help="worker name shown in the Prefect UI")] = None,
    limit: Annotated[int | None, typer.Option(help="flow runs this worker runs at once")] = None,
) -> None:
    """Start a Prefect process worker on semflow's CPU or GPU pool (`prefect worker start`)."""
    from semflow.team import POOLS, worker_command

    if pool not in POOLS:
        console.print(f"[red]--pool {pool}: expected one of {', '.join(POOLS)}[/red]")
        raise typer.Exit(2)
    command = worker_command(pool, name, limit)
    console.print("[dim]$ " + " ".join(command[1:]) + "[/dim]")
    os.execv(command[0], command)  # the worker is Prefect's own process: signals go straight to it


@app.command()
def resume(
    flow_run_id: Annotated[str | None, typer.Argument(help="default: the newest pipeline run that did not complete")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="locates the embedded Prefect and MLflow stores "
                                         "when no PREFECT_API_URL is set")] = Path("configs/default.yaml"),
    here: Annotated[bool, typer.Option(help="run in this process even if the run came from a deployment")] = False,
) -> None:
    """Finish a failed or killed pipeline run: rerun its parameters; finished stages come back Cached and
    training continues from its last checkpoint."""
    _load(config, None)
    from semflow.team import find_flow_run, mark_superseded, resume_via_deployment

    try:
        target = find_flow_run(flow_run_id)
    except LookupError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    params = target.parameters
    run_cfg = _load(Path(params.get("config_path", "configs/default.yaml")), params.get("overrides"))
    console.print(f"resuming {target.name} ({target.flow_run_id}, {target.state}): "
                  f"{params.get('config_path')} {' '.join(params.get('overrides') or [])}")
    mark_superseded(target, tracking_uri(run_cfg.runtime))
    if target.deployment_id and not here:
        flow_run = resume_via_deployment(target, None)
        console.print(f"flow run {flow_run.name} ({flow_run.id}): {flow_run.state.name if flow_run.state else '?'}")
        if not (flow_run.state and flow_run.state.is_completed()):
            raise typer.Exit(1)
        return
    from flows.pipeline import pipeline

    result = pipeline(params.get("config_path", "configs/default.yaml"), params.get("overrides") or [],
                      resume_of=target.flow_run_id)
    _report(run_cfg, Path(params.get("config_path", "configs/default.yaml")), result)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
