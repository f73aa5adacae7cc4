"""PNG plots of an alignment (matplotlib's Agg canvas; no pyplot, so no global backend state and safe
to call from worker threads).

Usage::

    from components.cade.analysis import vocabulary_overlap
    from components.cade.plots import plot_overlap, plot_neighbours
    plot_overlap(vocabulary_overlap(alignment), "out/overlap.png")
    plot_neighbours(alignment, ["bank", "court"], "out/neighbours.png", slices=["news", "encyclopedia"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
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


def _project(points: np.ndarray) -> np.ndarray:
    """First two principal components (zero-padded when there are fewer than two directions)."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))) if out.shape[1] < 2 else out


def plot_neighbours(
    alignment: Alignment,
    words: Sequence[str],
    path: str | Path,
    slices: Sequence[str] | None = None,
    topn: int = 8,
    min_count: int = 1,
) -> Path:
    """One row per word, one panel per slice: the word (red) and its ``topn`` nearest words in that slice.

    All panels of a row share one 2-D PCA projection, fitted on the word's and its neighbours' vectors
    from every slice: the slices are aligned, so positions compare across panels and a shifted word
    visibly moves between neighbourhoods. A word absent from a slice leaves that panel empty with a note;
    a word absent from every slice, or an unknown slice, raises CadeError.
    """
    names = list(slices) if slices else alignment.names
    kvs = {name: alignment.vectors(name) for name in names}
    if not words:
        raise CadeError("plot_neighbours needs at least one word")
    figure = Figure(figsize=(3.6 * len(names), 3.3 * len(words)))
    axes = figure.subplots(len(words), len(names), squeeze=False)
    for r, word in enumerate(words):
        found = {n: kv.key_to_index[word] for n, kv in kvs.items() if word in kv.key_to_index}
        if not found:
            raise CadeError(f"word {word!r} is in none of the slices {', '.join(names)}")
        groups = {}
        for name, row in found.items():
            kv = kvs[name]
            (near,) = nearest_rows(kv, [row], min_count, topn)
            labels = [word] + [w for w, _ in near]
            groups[name] = (labels, kv.vectors[[kv.key_to_index[w] for w in labels]])
        projected = _project(np.vstack([vectors for _, vectors in groups.values()]).astype(np.float64))
        start = 0
        for c, name in enumerate(names):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{word} in {name}", fontsize=10)
            if name not in groups:
                ax.text(0.5, 0.5, f"{word!r} not in this slice", ha="center", va="center", transform=ax.transAxes)
                continue
            labels, _ = groups[name]
            points = projected[start : start + len(labels)]
            start += len(labels)
            ax.scatter(points[1:, 0], points[1:, 1], s=14, color="tab:blue")
            ax.scatter(points[:1, 0], points[:1, 1], s=40, color="tab:red")
            for (x, y), label in zip(points, labels):
                ax.annotate(label, (x, y), fontsize=8, xytext=(3, 2), textcoords="offset points",
                            color="tab:red" if label == word else "black")
            pad = (np.ptp(projected, axis=0) * 0.12) + 1e-6
            ax.set_xlim(projected[:, 0].min() - pad[0], projected[:, 0].max() + pad[0])
            ax.set_ylim(projected[:, 1].min() - pad[1], projected[:, 1].max() + pad[1])
    figure.tight_layout()
    return _save(figure, path)
