"""Stage 6: CADE corpus alignment. A word2vec compass on all slices, then one embedding per slice trained
against the compass's frozen context matrix, so a word's vectors are comparable across slices
(components/cade). Slices: the configured corpora (news vs encyclopedia by default) and the generated
text: dataset references, teacher responses, student outputs before and after distillation."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from semflow.caching import stage_key
from semflow.config import GENERATED_SLICES, CadeConfig
from semflow.runtime import RunContext
from semflow.store import OutputRef, StageManifest
from tasks._stage import cached_stage, digest_dir, output_path, run_stage

STAGE = "cade_align"
MODULES = ("components.cade", "components.data", "tasks.cade_align", "tasks._stage")
# A generated slice this small says nothing about word use; it is left out with a warning (and counted)
# instead of failing the run. A configured corpus that is empty or unknown to the compass fails.
MIN_GENERATED_TOKENS = 50
log = logging.getLogger(__name__)


def cache_key(cade: CadeConfig, data: StageManifest, responses: StageManifest | None,
              student: StageManifest | None) -> str:
    upstream = {"corpora": data.output("corpora").digest}
    if responses is not None:
        upstream["responses"] = responses.output("responses").digest
    if student is not None:
        upstream["student_eval"] = student.output("eval").digest
    return stage_key(STAGE, {"cade": cade}, upstream, MODULES)


def slice_texts(data: StageManifest, responses: StageManifest | None, student: StageManifest | None) -> dict[str, list[str]]:
    """Every slice the upstream stages offer: corpora by name, then the generated ones."""
    from components.data import read_dataset

    corpora = read_dataset(output_path(data, "corpora"))
    texts = {name: group["text"].dropna().tolist() for name, group in corpora.groupby("corpus", sort=False)}
    if responses is not None:
        table = read_dataset(output_path(responses, "responses"))
        texts["references"] = table["reference"].dropna().tolist()
        texts["teacher"] = table["response"].dropna().tolist()
    if student is not None:
        table = read_dataset(output_path(student, "eval"))
        texts["student_before"] = table["student_before"].dropna().tolist()
        texts["student_after"] = table["student_after"].dropna().tolist()
    return texts


@cached_stage(STAGE, cache_key)
def cade_align(cade: CadeConfig, data: StageManifest, responses: StageManifest | None,
               student: StageManifest | None, run: RunContext) -> StageManifest:
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from components.cade import (
        CadeError,
        CadeSettings,
        align,
        evaluate,
        most_shifted,
        overlap_warnings,
        plot_neighbours,
        plot_overlap,
        save_alignment,
        sentences_from_texts,
        split_heldout,
        vocabulary_overlap,
    )
    from components.data import write_dataset

    def body(tmp: Path):
        available = slice_texts(data, responses, student)
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
        settings = CadeSettings(**cade.model_dump(exclude={"slices", "heldout", "shift_min_count", "top", "plot_words", "exclude_stopwords"}))
        bars: dict[str, tqdm] = {}

        def progress(name: str, done: int, total: int) -> None:
            bar = bars.get(name) or bars.setdefault(name, tqdm(total=total, desc=f"cade {name}", unit="word"))
            bar.update(done - bar.n)

        alignment = align(train, settings, progress)
        for bar in bars.values():
            bar.close()
        save_alignment(alignment, tmp / "embeddings")

        overlap = vocabulary_overlap(alignment)
        warnings = overlap_warnings(overlap)
        for w in warnings:
            log.warning("cade_align: %s", w)
        from gensim.parsing.preprocessing import STOPWORDS

        stop = STOPWORDS if cade.exclude_stopwords else ()
        pairs = [(a, b) for i, a in enumerate(alignment.names) for b in alignment.names[i + 1 :]]
        shifts = []
        for a, b in pairs:
            table = most_shifted(alignment, a, b, top=cade.top, min_count=cade.shift_min_count, exclude=stop)
            shifts.append(table.assign(slice_a=a, slice_b=b))
        shifts = pd.concat(shifts, ignore_index=True) if shifts else pd.DataFrame()
        likelihood = evaluate(alignment, heldout) if heldout else pd.DataFrame()

        outputs = {}
        for name, frame in (("overlap", overlap.reset_index()), ("shifts", shifts), ("likelihood", likelihood)):
            info = write_dataset(frame, tmp / f"{name}.parquet")
            outputs[name] = OutputRef(path=f"{name}.parquet", digest=info.digest, rows=info.rows)
        plots = [plot_overlap(overlap, tmp / "plots" / "overlap.png")]
        focus = _focus_pair(alignment.names)
        if focus and cade.plot_words and len(shifts):
            words = shifts[(shifts.slice_a == focus[0]) & (shifts.slice_b == focus[1])]["word"].head(cade.plot_words)
            if len(words):
                plots.append(plot_neighbours(alignment, list(words), tmp / "plots" / f"neighbours_{focus[0]}_{focus[1]}.png",
                                             slices=list(focus)))
        for png in plots:
            mlflow.log_artifact(str(png), "plots")
        mlflow.set_tags({"semflow.cade.slices": ",".join(alignment.names),
                         "semflow.cade.skipped": "; ".join(skipped) or "none",
                         "semflow.cade.overlap_warnings": " | ".join(warnings) or "none"})
        outputs["embeddings"] = OutputRef(path="embeddings", digest=digest_dir(tmp / "embeddings"))

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
        if len(likelihood):
            for row in likelihood.to_dict("records"):
                metrics[f"heldout_loglik.{row['slice']}"] = float(row["log_likelihood"])
        previews = {"shifts": shifts.head(50), "overlap": overlap.reset_index()}
        return outputs, metrics, previews

    params = {"cade": cade, "upstream.corpora": data.output("corpora").digest}
    return run_stage(STAGE, cache_key(cade, data, responses, student), run, params, body)


def _focus_pair(names: list[str]) -> tuple[str, str] | None:
    """The pair whose neighbours are plotted: the teacher vs the distilled student when both exist (the
    question this stage answers for distillation), else the first two slices."""
    for pair in (("teacher", "student_after"), ("news", "encyclopedia")):
        if all(p in names for p in pair):
            return pair
    return (names[0], names[1]) if len(names) >= 2 else None

