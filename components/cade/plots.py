"""PNG plots of an alignment (matplotlib's Agg canvas; no pyplot, so no global backend state and safe
to call from worker threads).

Usage::

    from components.cade.analysis import vocabulary_overlap
    from components.cade.plots import plot_overlap, plot_neighbours
    plot_overlap(vocabulary_overlap(alignment), "out/overlap.png")
    plot_neighbours(alignment, ["bank", "court"], "out/neighbours.png", slices=["news", "encyclopedia"])
    # one row per word, one panel per slice: its nearest words in that slice, as cosine bars
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from components.cade.alignment import Alignment
from components.cade.analysis import LOW_OVERLAP, nearest_rows
from components.cade.errors import CadeError


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_overlap(overlap: pd.DataFrame, path: str | Path, threshold: float = LOW_OVERLAP) -> Path:
    """Heatmap of a :func:`~components.cade.analysis.vocabulary_overlap` matrix, values written in the
    cells; pairs below ``threshold`` are marked with ``!``. Returns ``path``."""
    names = list(overlap.index)
    values = overlap.to_numpy(dtype=float)
    side = 1.2 + 0.9 * len(names)
    figure = Figure(figsize=(side + 1.2, side))
    ax = figure.add_subplot()
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            flag = "!" if i != j and values[i, j] < threshold else ""
            ax.text(j, i, f"{values[i, j]:.2f}{flag}", ha="center", va="center",
                    color="white" if values[i, j] < 0.6 else "black", fontsize=9)
    ax.set_title(f"Vocabulary overlap (Jaccard; ! below {threshold})")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(figure, path)


def plot_neighbours(
    alignment: Alignment,
    words: Sequence[str],
    path: str | Path,
    slices: Sequence[str] | None = None,
    topn: int = 8,
    min_count: int = 1,
) -> Path:
    """One row per word, one panel per slice: the word's ``topn`` nearest words in that slice as bars of
    cosine similarity (candidates: count >= min_count), the word's count in the panel title.

    Bars rather than a 2-D projection: within a tight cluster a projection's main axis is often the
    small difference between slices, which reads as a shift that the cosines do not show. A word absent
    from a slice leaves that panel empty with a note; a word absent from every slice, an empty word
    list, or an unknown slice raises CadeError. Returns ``path``.
    """
    names = list(slices) if slices else alignment.names
    kvs = {name: alignment.vectors(name) for name in names}
    if not words:
        raise CadeError("plot_neighbours needs at least one word")
    for word in words:
        if not any(word in kv.key_to_index for kv in kvs.values()):
            raise CadeError(f"word {word!r} is in none of the slices {', '.join(names)}")
    figure = Figure(figsize=(3.4 * len(names), 0.9 + 0.28 * topn * len(words)))
    axes = figure.subplots(len(words), len(names), squeeze=False)
    for r, word in enumerate(words):
        for c, name in enumerate(names):
            ax, kv = axes[r][c], kvs[name]
            if word not in kv.key_to_index:
                ax.set_title(f"{word} in {name}", fontsize=10)
                ax.text(0.5, 0.5, "not in this slice", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            (near,) = nearest_rows(kv, [kv.key_to_index[word]], min_count, topn)
            labels = [w for w, _ in near][::-1]  # nearest at the top
            ax.barh(range(len(near)), [cos for _, cos in near][::-1], color="tab:blue")
            ax.set_yticks(range(len(near)), labels, fontsize=8)
            ax.set_xlim(min(0.0, min((cos for _, cos in near), default=0.0)), 1.0)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(f"{word} in {name} (count {int(kv.get_vecattr(word, 'count'))})", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)
