"""SE-DSI commands: search the index, index add."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from semflow.cli.common import ConfigOpt, SetOpt, app, console, load
from semflow.config import PipelineConfig
from semflow.runtime import artifact_root


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
    cfg = load(config, overrides)
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
    cfg = load(config, overrides)
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


