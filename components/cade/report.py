"""The `cade_align` stage's analysis: the slices, the alignment, then every table, metric and plot it reports.

Usage::

    texts, note = generated_slice_texts(responses, eval_table)   # teacher/student slices on the same prompts
    report = align_and_report({"news": texts_a, "encyclopedia": texts_b, **texts}, CadeConfig(), out_dir)
    report.tables["shifts"]       # per slice pair, the most shifted shared words, with z and q
    report.tables["selfcheck"]    # planted swaps in the focus pairs: which were found
    report.metrics["self_check_recall.teacher_vs_student_after"]
    report.plots                  # PNG paths under out_dir/plots

The embeddings (with the slices' texts the context measure reads, and any split-half replicates) are
saved under `out_dir/embeddings` (safetensors + JSON, see components.cade.files). A generated slice
(teacher or student text) under MIN_GENERATED_TOKENS tokens says nothing about word use: it is left out
with a warning and counted, instead of failing the run. A configured corpus that is empty or unknown to the compass fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.cade.alignment import Alignment, align
from components.cade.analysis import few_texts_reason, most_shifted, overlap_warnings, vocabulary_overlap
from components.cade.errors import CadeError
from components.cade.files import save_alignment
from components.cade.likelihood import evaluate
from components.cade.plots import plot_neighbours, plot_overlap
from components.cade.selfcheck import LOW_RECALL, self_check
from components.cade.settings import CadeSettings
from components.cade.shift import usable_measure
from components.cade.text import sentences_from_texts, split_heldout
from semflow.config import GENERATED_SLICES, CadeConfig

MIN_GENERATED_TOKENS = 50
FOCUS_PAIRS = (("teacher", "student_after"), ("news", "encyclopedia"))
log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass
class CadeReport:
    alignment: Alignment
    tables: dict[str, pd.DataFrame]
    metrics: dict[str, float]
    plots: list[Path] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


def generated_slice_texts(responses: pd.DataFrame | None, eval_table: pd.DataFrame | None) -> tuple[dict[str, list[str]], str]:
    """The generated slices and a note saying which prompts they answer.

    With the distillation's ``eval`` table (one row per test prompt: reference, teacher, student_before,
    student_after) every generated slice holds the answers to those same prompts, so a teacher-vs-student
    shift measures the models, not different prompts. Without it (no distillation in the run), references
    and teacher come from the teacher's ``responses`` to every prompt it answered."""
    if eval_table is not None:
        columns = {"references": "reference", "teacher": "teacher", "student_before": "student_before",
                   "student_after": "student_after"}
        texts = {name: eval_table[column].dropna().tolist() for name, column in columns.items() if column in eval_table}
        return texts, f"test prompts of distill_student's eval table ({len(eval_table)})"
    if responses is not None:
        texts = {"references": responses["reference"].dropna().tolist(), "teacher": responses["response"].dropna().tolist()}
        return texts, f"every prompt generate_teacher answered ({len(responses)})"
    return {}, "none"


def focus_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The pairs plotted and self-checked: teacher vs distilled student and news vs encyclopedia when they
    exist (the questions this stage answers), else the first two slices."""
    pairs = [p for p in FOCUS_PAIRS if all(n in names for n in p)]
    return pairs or ([(names[0], names[1])] if len(names) >= 2 else [])


def pair_label(a: str, b: str) -> str:
    return f"{a}_vs_{b}"


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
    alignment = align(train, CadeSettings.from_config(cade), progress)
    save_alignment(alignment, out_dir / "embeddings")

    overlap = vocabulary_overlap(alignment)
    warnings = overlap_warnings(overlap)
    from gensim.parsing.preprocessing import STOPWORDS

    stop = STOPWORDS if cade.exclude_stopwords else ()
    names = alignment.names
    shifts, metrics = [], {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            measure, why = usable_measure(alignment, a, b, cade.shift_measure)
            if why:
                warnings.append(f"{a} vs {b}: {why}")
            table = most_shifted(alignment, a, b, top=cade.top, min_count=cade.shift_min_count, exclude=stop,
                                 measure=measure, context_layout=cade.context_layout,
                                 permutations=cade.context_permutations)
            if reason := few_texts_reason(table, cade.shift_fdr):
                warnings.append(f"{a} vs {b}: {reason}")
            shifts.append(table.assign(slice_a=a, slice_b=b, measure=measure))
            metrics[f"compared_words.{pair_label(a, b)}"] = float(table.attrs["eligible"])
            metrics[f"significant_shifts.{pair_label(a, b)}"] = float((table["q"] < cade.shift_fdr).sum())
    shifts = pd.concat(shifts, ignore_index=True) if shifts else pd.DataFrame()

    checks, recalls = [], []
    if cade.self_check:
        for a, b in focus_pairs(names):
            check = self_check(alignment, train, a, b, min_count=cade.shift_min_count, pairs=cade.self_check_pairs,
                               measure=usable_measure(alignment, a, b, cade.shift_measure)[0], exclude=stop,
                               fdr=cade.shift_fdr, seed=cade.seed, context_layout=cade.context_layout,
                               permutations=cade.context_permutations)
            metrics[f"self_check_recall.{pair_label(a, b)}"] = check.recall
            recalls.append(check.recall)
            checks.append(check.table.assign(slice_a=a, slice_b=b, planted_in=check.planted_in))
            if check.message:
                warnings.append(check.message)
    selfcheck = pd.concat(checks, ignore_index=True) if checks else pd.DataFrame(
        columns=["word", "partner", "rank", "shift", "z", "q", "found", "slice_a", "slice_b", "planted_in"])
    for w in warnings:
        log.warning("cade_align: %s", w)
    likelihood = evaluate(alignment, heldout) if heldout else pd.DataFrame()

    plots = [plot_overlap(overlap, out_dir / "plots" / "overlap.png")]
    focus = focus_pairs(names)[:1]
    if focus and cade.plot_words and len(shifts):
        (fa, fb), = focus
        words = shifts[(shifts.slice_a == fa) & (shifts.slice_b == fb)]["word"].head(cade.plot_words)
        if len(words):
            plots.append(plot_neighbours(alignment, list(words), out_dir / "plots" / f"neighbours_{fa}_{fb}.png",
                                         slices=[fa, fb]))

    values = overlap.to_numpy()
    off_diag = values[~np.eye(len(values), dtype=bool)]
    metrics |= {
        "slices": float(len(names)),
        "slices_skipped": float(len(skipped)),
        "compass_vocabulary": float(len(alignment.compass.index_to_key)),
        "overlap_min": float(off_diag.min()) if off_diag.size else 1.0,
        "overlap_mean": float(off_diag.mean()) if off_diag.size else 1.0,
        "overlap_warnings": float(sum("Jaccard" in w for w in warnings)),
        "warnings": float(len(warnings)),
    }
    for name, stat in alignment.stats.items():
        metrics[f"words_per_second.{name}"] = stat.raw_words / max(stat.seconds, 1e-9)
        metrics[f"epochs.{name}"] = float(stat.epochs)
    for row in likelihood.to_dict("records") if len(likelihood) else []:
        metrics[f"heldout_loglik.{row['slice']}"] = float(row["log_likelihood"])
    low = [r for r in recalls if not r >= LOW_RECALL]  # NaN (nothing to plant) is low too
    tags = {"semflow.cade.slices": ",".join(names), "semflow.cade.skipped": "; ".join(skipped) or "none",
            "semflow.cade.overlap_warnings": " | ".join(w for w in warnings if "Jaccard" in w) or "none",
            "semflow.cade.warnings": " | ".join(warnings) or "none",
            "semflow.cade.shift_measure": cade.shift_measure,
            "semflow.cade.self_check": "low recall" if low else ("ok" if recalls else "off")}
    tables = {"overlap": overlap.reset_index(), "shifts": shifts, "likelihood": likelihood, "selfcheck": selfcheck}
    return CadeReport(alignment=alignment, tables=tables, metrics=metrics, plots=plots, tags=tags)
