"""CADE commands: shift (most shifted words between two slices, with their significance), neighbours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from semflow.cli.common import ConfigOpt, RunIdOpt, SetOpt, app, console, fail, load
from semflow.config import PipelineConfig
from semflow.runtime import artifact_root

MinCountOpt = Annotated[int | None, typer.Option(
    "--min-count", min=1, help="only words this frequent in each slice (default: the preset's cade.shift_min_count)")]


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
        raise fail(f"no cade_align artifact {which} under {store.root}: run the pipeline first")
    latest = max(manifests, key=lambda m: m.created)
    return load_alignment(local_dir(latest) / latest.output("embeddings").path), latest


def _stage_self_check(manifest, a: str, b: str) -> str | None:
    """The stage's self-check of this pair (either order), as one line, if it ran one."""
    import pandas as pd

    from semflow.store import local_dir

    if "selfcheck" not in manifest.outputs:
        return None
    table = pd.read_parquet(local_dir(manifest) / manifest.output("selfcheck").path)
    rows = table[((table.slice_a == a) & (table.slice_b == b)) | ((table.slice_a == b) & (table.slice_b == a))]
    if rows.empty:
        return None
    found = int(rows["found"].sum())
    return (f"self-check (cade_align): {found} of {len(rows)} planted swaps in {rows['planted_in'].iloc[0]} "
            f"found at the stage's significance threshold (recall {found / len(rows):.2f})")


@app.command()
def shift(
    slice_a: Annotated[str, typer.Argument(help="first slice, e.g. teacher")],
    slice_b: Annotated[str, typer.Argument(help="second slice, e.g. student_after")],
    top: Annotated[int, typer.Option(min=1, help="how many words")] = 20,
    min_count: MinCountOpt = None,
    measure: Annotated[str | None, typer.Option(
        help="context, split_half or cosine (default: the preset's cade.shift_measure)")] = None,
    keep_stopwords: Annotated[bool, typer.Option(help="list function words too")] = False,
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    run_id: RunIdOpt = None,
) -> None:
    """The words whose use differs most between two slices, each with its significance (q: the false
    discovery rate at which it counts as a shift; docs/cade.md)."""
    cfg = load(config, overrides)
    from gensim.parsing.preprocessing import STOPWORDS

    from components.cade import CadeError, most_shifted
    from components.cade.analysis import few_texts_reason, fewer_rows_reason
    from components.cade.shift import MEASURES, MIN_NULL_WORDS, usable_measure

    wanted = measure or cfg.cade.shift_measure
    if wanted not in MEASURES:
        raise fail(f"--measure {wanted!r}: expected one of {', '.join(MEASURES)}")
    min_count = min_count or cfg.cade.shift_min_count
    alignment, manifest = _alignment(cfg, run_id)
    try:
        used, why = usable_measure(alignment, slice_a, slice_b, wanted)
        table = most_shifted(alignment, slice_a, slice_b, top=top, min_count=min_count, topn=5, measure=used,
                             exclude=() if keep_stopwords else STOPWORDS, context_layout=cfg.cade.context_layout,
                             permutations=cfg.cade.context_permutations)
    except CadeError as err:
        raise fail(str(err)) from None
    fdr = cfg.cade.shift_fdr
    out = Table(title=f"most shifted words, {slice_a} vs {slice_b}, by {used} (cade_align {manifest.key})")
    for column in ("word", "shift", "q", "cosine", f"count {slice_a}", f"count {slice_b}", f"neighbours {slice_a}",
                   f"neighbours {slice_b}"):
        out.add_column(column)
    for r in table.to_dict("records"):
        q = "n/a" if r["q"] != r["q"] else f"{r['q']:.2g}" + (" *" if r["q"] < fdr else "")
        out.add_row(r["word"], f"{r['shift']:.3f}", q, f"{r['cosine']:.3f}", str(r["count_a"]), str(r["count_b"]),
                    str(r["neighbours_a"]), str(r["neighbours_b"]))
    console.print(out)
    significant = int((table["q"] < fdr).sum())
    null = {"quarters": "pseudo pairs of the slices' quarters",
            "permutation": "each word's texts relabelled between the slices at random"}.get(
        table.attrs.get("null"), "the compared words' own spread (empirical null)")
    notes = [f"* q < {fdr}: a shift at a {fdr:.0%} false discovery rate ({significant} of {len(table)} shown; "
             f"null: {null}); the others are within what re-sampling the texts would give"]
    if why:
        notes.append(why)
    if used != "context" and table.attrs["eligible"] < MIN_NULL_WORDS:
        notes.append(f"no significance: {table.attrs['eligible']} word(s) compared, fewer than {MIN_NULL_WORDS} "
                     "to estimate what an unshifted word looks like")
    if reason := few_texts_reason(table, fdr):
        notes.append(reason)
    if reason := fewer_rows_reason(table, top):
        notes.append(reason)
    if check := _stage_self_check(manifest, slice_a, slice_b):
        notes.append(check)
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


@app.command()
def neighbours(
    word: Annotated[str, typer.Argument(help="the word to look up")],
    slices: Annotated[list[str] | None, typer.Option("--slices", help="slices to compare (repeat or list)")] = None,
    topn: Annotated[int, typer.Option(min=1, help="neighbours per slice")] = 10,
    min_count: MinCountOpt = None,
    config: ConfigOpt = Path("configs/default.yaml"),
    overrides: SetOpt = None,
    run_id: RunIdOpt = None,
) -> None:
    """A word's nearest neighbours in each slice, side by side (rare words' vectors are mostly noise,
    hence the frequency floor: the same rule as the shift tables)."""
    cfg = load(config, overrides)
    from components.cade import CadeError
    from components.cade import neighbours as find_neighbours

    alignment, manifest = _alignment(cfg, run_id)
    try:
        table = find_neighbours(alignment, word, slices=slices or None, topn=topn,
                                min_count=min_count or cfg.cade.shift_min_count)
    except CadeError as err:
        raise fail(str(err)) from None
    out = Table(title=f"neighbours of {word!r} (cade_align {manifest.key})")
    names = list(dict.fromkeys(table["slice"]))
    out.add_column("rank")
    for name in names:
        out.add_column(f"{name} ({alignment.count(name, word)}x)")
    for rank, group in table.groupby("rank", sort=True):
        cells = {r.slice: f"{r.neighbour} {r.cosine:.2f}" for r in group.itertuples()}
        out.add_row(str(rank), *[cells.get(n, "") for n in names])
    console.print(out)
