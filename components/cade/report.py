"""The `cade_align` stage's analysis: align the slices, then every table, metric and plot it reports.

Usage::

    report = align_and_report({"news": texts_a, "encyclopedia": texts_b}, CadeConfig(), out_dir)
    report.tables["shifts"]       # per slice pair, the most shifted shared words
    report.metrics["overlap_min"]
    report.plots                  # PNG paths under out_dir/plots

The embeddings are saved under `out_dir/embeddings` (safetensors + JSON, see components.cade.files).
A generated slice (teacher or student text) under MIN_GENERATED_TOKENS tokens says nothing about word
use: it is left out with a warning and counted, instead of failing the run. A configured corpus that
is empty or unknown to the compass fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.cade.alignment import Alignment, align
from components.cade.analysis import most_shifted, overlap_warnings, vocabulary_overlap
from components.cade.errors import CadeError
from components.cade.files import save_alignment
from components.cade.likelihood import evaluate
from components.cade.plots import plot_neighbours, plot_overlap
from components.cade.settings import CadeSettings
from components.cade.text import sentences_from_texts, split_heldout
from semflow.config import GENERATED_SLICES, CadeConfig

MIN_GENERATED_TOKENS = 50
log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass
class CadeReport:
    alignment: Alignment
    tables: dict[str, pd.DataFrame]
    metrics: dict[str, float]
    plots: list[Path] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


def align_and_report(available: dict[str, list[str]], cade: CadeConfig, out_dir: Path,
                     progress: Progress | None = None) -> CadeReport:
    wanted = cade.slices or list(available)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise CadeError(f"cade.slices: unknown slice(s) {unknown}; available: {sorted(available)}")
    sentences, skipped = {}, []
    for name in wanted:
        tokens = sentences_from_texts(available[name])
        n_tokens = sum(len(s) for s in tokens)
        if name in GENERATED_SLICES and n_tokens < MIN_GENERATED_TOKENS:
            skipped.append(f"{name} ({n_tokens} tokens < {MIN_GENERATED_TOKENS})")
            continue
        sentences[name] = tokens
    for note in skipped:
        log.warning("cade_align: generated slice %s left out", note)

    train, heldout = {}, {}
    for name, sents in sentences.items():
        if cade.heldout > 0 and len(sents) >= 2:
            train[name], heldout[name] = split_heldout(sents, cade.heldout, cade.seed)
        else:
            train[name] = sents
    settings = CadeSettings(**cade.model_dump(exclude={"slices", "heldout", "shift_min_count", "top", "plot_words",
                                                       "exclude_stopwords"}))
    alignment = align(train, settings, progress)
    save_alignment(alignment, out_dir / "embeddings")

    overlap = vocabulary_overlap(alignment)
    warnings = overlap_warnings(overlap)
    for w in warnings:
        log.warning("cade_align: %s", w)
    from gensim.parsing.preprocessing import STOPWORDS

    stop = STOPWORDS if cade.exclude_stopwords else ()
    pairs = [(a, b) for i, a in enumerate(alignment.names) for b in alignment.names[i + 1 :]]
    shifts = [most_shifted(alignment, a, b, top=cade.top, min_count=cade.shift_min_count, exclude=stop)
              .assign(slice_a=a, slice_b=b) for a, b in pairs]
    shifts = pd.concat(shifts, ignore_index=True) if shifts else pd.DataFrame()
    likelihood = evaluate(alignment, heldout) if heldout else pd.DataFrame()

    plots = [plot_overlap(overlap, out_dir / "plots" / "overlap.png")]
    focus = _focus_pair(alignment.names)
    if focus and cade.plot_words and len(shifts):
        words = shifts[(shifts.slice_a == focus[0]) & (shifts.slice_b == focus[1])]["word"].head(cade.plot_words)
        if len(words):
            plots.append(plot_neighbours(alignment, list(words),
                                         out_dir / "plots" / f"neighbours_{focus[0]}_{focus[1]}.png",
                                         slices=list(focus)))

    values = overlap.to_numpy()
    off_diag = values[~np.eye(len(values), dtype=bool)]
    metrics = {
        "slices": float(len(alignment.names)),
        "slices_skipped": float(len(skipped)),
        "compass_vocabulary": float(len(alignment.compass.index_to_key)),
        "overlap_min": float(off_diag.min()) if off_diag.size else 1.0,
        "overlap_mean": float(off_diag.mean()) if off_diag.size else 1.0,
        "overlap_warnings": float(len(warnings)),
    }
    for name, stat in alignment.stats.items():
        metrics[f"words_per_second.{name}"] = stat.raw_words / max(stat.seconds, 1e-9)
    for row in likelihood.to_dict("records") if len(likelihood) else []:
        metrics[f"heldout_loglik.{row['slice']}"] = float(row["log_likelihood"])
    tags = {"semflow.cade.slices": ",".join(alignment.names), "semflow.cade.skipped": "; ".join(skipped) or "none",
            "semflow.cade.overlap_warnings": " | ".join(warnings) or "none"}
    tables = {"overlap": overlap.reset_index(), "shifts": shifts, "likelihood": likelihood}
    return CadeReport(alignment=alignment, tables=tables, metrics=metrics, plots=plots, tags=tags)


def _focus_pair(names: list[str]) -> tuple[str, str] | None:
    """The pair whose neighbours are plotted: the teacher vs the distilled student when both exist (the
    question this stage answers for distillation), else the first two slices."""
    for pair in (("teacher", "student_after"), ("news", "encyclopedia")):
        if all(p in names for p in pair):
            return pair
    return (names[0], names[1]) if len(names) >= 2 else None
