"""CADE commands: shift (most shifted words between two slices), neighbours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from semflow.cli.common import ConfigOpt, SetOpt, app, console, load
from semflow.config import PipelineConfig
from semflow.runtime import artifact_root


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
    cfg = load(config, overrides)
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
    cfg = load(config, overrides)
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


