"""SE-DSI commands: search the index, index add."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from semflow.cli.common import ConfigOpt, SetOpt, app, console, err_console, fail, load
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
        raise fail(f"no SE-DSI index {which} under {artifact_root(cfg.runtime)}: run the pipeline with "
                   "sedsi.enabled (the default) first")
    return manifests[-1]


def check_search_args(query: str, k: int, beams: int | None) -> None:
    """Exit 2 with one line for an empty or blank query, --k < 1 or --beams < 1 (nothing is loaded first)."""
    if not query.strip():
        raise fail("the query is empty: give the words to search for, e.g. semflow search \"jet engine noise\"")
    if k < 1:
        raise fail(f"--k {k}: the number of documents to list must be >= 1")
    if beams is not None and beams < 1:
        raise fail(f"--beams {beams}: the beam width must be >= 1")


IndexRunOpt = Annotated[str | None, typer.Option("--run", "--run-id", help="MLflow run id of an index build or add")]


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("--k", help="documents to list (>= 1)")] = 10,
    beams: Annotated[int | None, typer.Option(help="beam width (default: sedsi.num_beams; >= 1)")] = None,
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    run_id: IndexRunOpt = None,
) -> None:
    """Search the SE-DSI index: the documents whose identifiers (EDs) the model decodes for the query,
    ranked by length-normalised log-probability (sedsi.length_penalty)."""
    check_search_args(query, k, beams)
    cfg = load(config, overrides)
    from components.models import pick_device
    from components.sedsi import SedsiIndex
    from semflow.store import local_dir

    manifest = _index_manifest(cfg, run_id)
    index = SedsiIndex.load(local_dir(manifest) / manifest.output("index").path, pick_device(cfg.teacher.device))
    width = beams or cfg.sedsi.num_beams
    tokens = len(index.tokenizer("Query: " + query, add_special_tokens=False)["input_ids"])
    if tokens > index.encoder.max_input_tokens:
        err_console.print(f"note: the query has {tokens} tokens; only the first {index.encoder.max_input_tokens} "
                          "were searched (sedsi.max_input_tokens)", highlight=False, soft_wrap=True)
    hits = index.search([query], k=k, num_beams=max(width, k) if beams is None else width,
                        length_penalty=cfg.sedsi.length_penalty)[0]
    console.print(f"index {manifest.stage}/{manifest.key}: {len(index.doc_ids)} documents")
    out = Table(title=repr(query))
    for column in ("rank", "doc_id", "title", "ED", "score"):
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
        raise fail(f"{documents}: no such file")
    if documents.stat().st_size == 0 or not documents.read_bytes().strip():
        raise fail(f"{documents}: the file is empty: no document to add")
    parent = _index_manifest(cfg, run_id)
    try:
        manifest = add_to_index(cfg.teacher, cfg.generation, cfg.sedsi, parent, str(documents), run_context(cfg))
    except (DataError, ValueError) as err:
        raise fail(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
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
    console.print("queries: held-out pseudo-queries of each document (pseudo.*), not labelled queries")
    console.print(f"added {int(m['documents_added'])} documents; trained on {int(m['pairs_new'])} new pairs + "
                  f"{int(m['pairs_replayed'])} replayed; forgetting (Hits@10 drop): {m.get('forgetting.hits_at_10', float('nan')):.3f}")
