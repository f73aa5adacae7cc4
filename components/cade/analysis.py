"""Compare aligned slices: vocabulary overlap, the most shifted words, a word's neighbours per slice.

Usage::

    from components.cade.analysis import vocabulary_overlap, overlap_warnings, most_shifted, neighbours
    overlap = vocabulary_overlap(alignment)          # slices x slices Jaccard matrix
    for message in overlap_warnings(overlap):
        logger.warning(message)
    most_shifted(alignment, "news", "encyclopedia", top=20)
    #   word  shift  z    q      cosine  count_a  count_b  neighbours_a            neighbours_b
    #   ...   2.31   9.4  1e-12  0.12    31       28       "police, officers, ..."  "empire, roman, ..."
    neighbours(alignment, "bank", slices=["news", "encyclopedia"], topn=5)

Cosines compare a word's vectors from two slices directly: CADE trained every slice against the same
frozen context matrix, so the slices share one coordinate system and no rotation is needed (Bianchi et
al. 2020, arXiv 2004.06519). Shift tables rank by components.cade.shift's measures.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd
from gensim.models import KeyedVectors

from components.cade.alignment import Alignment
from components.cade.contexts import DEFAULT_PERMUTATIONS, smallest_p
from components.cade.shift import shift_scores
from semflow.config.cade import CadeConfig

# Jaccard overlap below which two slices' comparison is flagged. CADE aligns slices only through the
# words they share with the compass and with each other: the CADE paper (Bianchi et al. 2020) reports
# that alignment quality depends on vocabulary overlap, but gives no universal cutoff. Below 0.3 fewer
# than a third of the two vocabularies' union occurs in both, so most words of each slice are placed
# only by contexts the other slice never sees: a shift table over such slices is dominated by topic
# differences rather than meaning changes. A rule of thumb for a warning, not a number from the paper.
LOW_OVERLAP = 0.3

# The one min-count rule for shift tables and neighbour lists (its reasoning sits beside it, in the
# `cade:` config section: semflow/config/cade.py).
DEFAULT_MIN_COUNT = CadeConfig.model_fields["shift_min_count"].default

SHIFT_COLUMNS = ["word", "shift", "z", "q", "cosine", "count_a", "count_b", "neighbours_a", "neighbours_b"]


def _frequent(kv: KeyedVectors, min_count: int) -> np.ndarray:
    return kv.expandos["count"] >= min_count


def vocabulary_overlap(alignment: Alignment, min_count: int = 1) -> pd.DataFrame:
    """Jaccard overlap |A & B| / |A | B| of the slices' vocabularies (words with count >= min_count).

    A square DataFrame indexed and columned by slice name, 1.0 on the diagonal (0.0 for a slice with no
    such word).
    """
    vocabularies = {
        name: {w for w, keep in zip(kv.index_to_key, _frequent(kv, min_count)) if keep}
        for name, kv in alignment.slices.items()
    }
    names = list(vocabularies)
    matrix = np.ones((len(names), len(names)))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            union = len(vocabularies[a] | vocabularies[names[j]])
            value = len(vocabularies[a] & vocabularies[names[j]]) / union if union else 0.0
            matrix[i, j] = matrix[j, i] = value
        if not vocabularies[a]:
            matrix[i, i] = 0.0
    return pd.DataFrame(matrix, index=pd.Index(names, name="slice"), columns=names)


def overlap_warnings(overlap: pd.DataFrame, threshold: float = LOW_OVERLAP) -> list[str]:
    """One message per slice pair whose Jaccard overlap is below ``threshold`` (see LOW_OVERLAP)."""
    names = list(overlap.index)
    messages = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            value = float(overlap.loc[a, b])
            if value < threshold:
                shown = math.floor(value * 1000) / 1000  # rounded down: 0.2996 never reads "0.30 < 0.3"
                messages.append(
                    f"slices {a!r} and {b!r} share {shown:.1%} of their vocabulary (Jaccard {shown:.3f} < "
                    f"{threshold}): alignment between them is less reliable; read their shift table with care"
                )
    return messages


def _normed(kv: KeyedVectors) -> np.ndarray:
    return kv.get_normed_vectors()


def nearest_rows(
    kv: KeyedVectors, rows: Sequence[int], min_count: int, topn: int, batch: int = 512
) -> list[list[tuple[str, float]]]:
    """For each row of ``kv``: its ``topn`` most cosine-similar words with count >= min_count, itself
    excluded, best first."""
    normed = _normed(kv)
    pool = np.flatnonzero(_frequent(kv, min_count))
    out: list[list[tuple[str, float]]] = []
    if not len(pool) or topn <= 0:
        return [[] for _ in rows]
    candidates = normed[pool]
    keys = kv.index_to_key
    for start in range(0, len(rows), batch):
        chunk = np.asarray(rows[start : start + batch], dtype=np.int64)
        sims = normed[chunk] @ candidates.T  # [chunk, pool]
        sims[pool[None, :] == chunk[:, None]] = -np.inf  # a word is not its own neighbour
        k = min(topn, len(pool))
        if k < len(pool):
            best = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            best = np.tile(np.arange(len(pool)), (len(chunk), 1))
        for r, cols in enumerate(best):
            cols = cols[np.argsort(-sims[r, cols], kind="stable")]
            out.append([(keys[pool[c]], float(sims[r, c])) for c in cols if np.isfinite(sims[r, c])])
    return out


def _joined(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(word for word, _ in pairs)


def shift_table(
    alignment: Alignment,
    a: str,
    b: str,
    min_count: int = DEFAULT_MIN_COUNT,
    topn: int = 10,
    top: int | None = None,
    exclude: Collection[str] = (),
    measure: str = "context",
    context_layout: str = "sides",
    permutations: int = DEFAULT_PERMUTATIONS,
) -> pd.DataFrame:
    """Every word with count >= min_count in both slices, most shifted first, by ``measure``
    (components.cade.shift: ``context``, ``split_half`` or ``cosine``; ``context_layout`` and
    ``permutations`` are the context test's).

    Columns: word, shift (the measure's score, higher = more shifted), z and q (its significance: q < 0.05
    is a shift at a 5% false discovery rate; NaN with too few words to estimate a null), cosine (between
    its vectors in ``a`` and ``b``), count_a, count_b, neighbours_a, neighbours_b (its ``topn`` nearest
    words in each slice among words with count >= min_count, comma separated). ``top`` keeps only the first
    rows (neighbours are computed only for those). ``exclude`` drops words from the rows (not from the
    neighbours), e.g. ``gensim.parsing.preprocessing.STOPWORDS``: on small corpora function words shift
    with genre and crowd the top of the table. ``df.attrs`` holds the slice names, min_count, measure,
    eligible (how many words passed the count rule: the table has fewer rows than ``top`` only when this
    is smaller) and the slices' token counts. Ties are broken by word.
    """
    kv_a, kv_b = alignment.vectors(a), alignment.vectors(b)
    frame = shift_scores(alignment, a, b, min_count, measure, exclude, context_layout=context_layout,
                         permutations=permutations)
    attrs = dict(frame.attrs)
    if top is not None:
        frame = frame.head(top)
    rows_a = [kv_a.key_to_index[w] for w in frame["word"]]
    rows_b = [kv_b.key_to_index[w] for w in frame["word"]]
    frame = frame.assign(neighbours_a=[_joined(n) for n in nearest_rows(kv_a, rows_a, min_count, topn)],
                         neighbours_b=[_joined(n) for n in nearest_rows(kv_b, rows_b, min_count, topn)])
    frame = frame[SHIFT_COLUMNS].reset_index(drop=True)
    frame.attrs.update(attrs | {"tokens_a": alignment.tokens.get(a, 0), "tokens_b": alignment.tokens.get(b, 0)})
    return frame


def few_texts_reason(table: pd.DataFrame, fdr: float) -> str | None:
    """Why no word of a context-measure ``table`` can be significant, if its slices hold too few texts for
    any p to reach ``fdr`` (components.cade.contexts.smallest_p); None otherwise."""
    at = table.attrs
    if at.get("measure") != "context" or "texts_a" not in at:
        return None
    floor = smallest_p(at["texts_a"], at["texts_b"])
    if floor < fdr:
        return None
    return (f"no word can reach q < {fdr}: the context test relabels whole texts, and {at['a']!r} ({at['texts_a']} "
            f"text(s)) and {at['b']!r} ({at['texts_b']}) allow no p below {floor:.2g}; split long texts into "
            "documents (articles, chapters, answers) or read the ranking without significance")


def fewer_rows_reason(table: pd.DataFrame, top: int) -> str | None:
    """Why ``table`` (from :func:`shift_table`) has fewer than ``top`` rows, or None if it has them all."""
    if len(table) >= top:
        return None
    at = table.attrs
    return (f"{len(table)} of --top {top} rows: only {at.get('eligible', len(table))} word(s) occur >= "
            f"{at.get('min_count')} times in both {at.get('a')!r} ({at.get('tokens_a', '?')} tokens) and "
            f"{at.get('b')!r} ({at.get('tokens_b', '?')} tokens), stopwords excluded unless kept; a lower "
            "min-count admits words whose vectors are mostly noise, more text admits more words")


def most_shifted(
    alignment: Alignment,
    a: str,
    b: str,
    top: int = 20,
    min_count: int = DEFAULT_MIN_COUNT,
    topn: int = 10,
    exclude: Collection[str] = (),
    measure: str = "context",
    context_layout: str = "sides",
    permutations: int = DEFAULT_PERMUTATIONS,
) -> pd.DataFrame:
    """The ``top`` most shifted words between slices ``a`` and ``b`` (the head of :func:`shift_table`)."""
    return shift_table(alignment, a, b, min_count=min_count, topn=topn, top=top, exclude=exclude, measure=measure,
                       context_layout=context_layout, permutations=permutations)


def neighbours(
    alignment: Alignment,
    word: str,
    slices: Sequence[str] | None = None,
    topn: int = 10,
    min_count: int = 1,
) -> pd.DataFrame:
    """The ``topn`` nearest words to ``word`` within each slice (default: all slices).

    Columns: slice, rank (1 = nearest), neighbour, cosine, count (the neighbour's count in that slice);
    candidates are words with count >= min_count. CadeError names the word and slice if the word is
    absent from a requested slice, or the slice if it does not exist.
    """
    names = list(slices) if slices else alignment.names
    for name in names:
        alignment.vectors(name)
    rows = {name: alignment.require(name, word) for name in names}
    records = []
    for name in names:
        kv = alignment.slices[name]
        (found,) = nearest_rows(kv, [rows[name]], min_count, topn)
        for rank, (neighbour, cosine) in enumerate(found, start=1):
            records.append((name, rank, neighbour, cosine, int(kv.get_vecattr(neighbour, "count"))))
    frame = pd.DataFrame.from_records(records, columns=["slice", "rank", "neighbour", "cosine", "count"])
    frame.attrs["word"] = word
    return frame


def cross_similarity(alignment: Alignment, word: str, slices: Sequence[str] | None = None) -> pd.DataFrame:
    """Cosine between ``word``'s vectors in every pair of the given slices (square DataFrame)."""
    names = list(slices) if slices else alignment.names
    vecs = []
    for name in names:
        row = alignment.require(name, word)
        vecs.append(_normed(alignment.slices[name])[row])
    matrix = np.vstack(vecs) @ np.vstack(vecs).T
    return pd.DataFrame(matrix.astype(np.float64), index=pd.Index(names, name="slice"), columns=names)
