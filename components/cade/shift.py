"""How much a word's use differs between two aligned slices, and how sure that is.

Three measures rank words (``MEASURES``):

- ``"context"`` (the default): a permutation test over the slices' texts of the word's mean context
  in the frozen compass context matrix, its linearised CADE vector (components.cade.contexts, which
  documents it). ``shift`` is the distance between the slices' mean contexts over its mean when texts
  are relabelled at random (~1 unchanged), ``z`` and ``q`` come from the word's own permutation null,
  and words are ranked by ``z`` (a word seen in more texts needs a smaller distance to be as sure).
  It needs the slices' texts (``Alignment.texts``), not replicates. On the planted-shift benchmark it
  found more planted words than split_half on the Wikipedia sample (the 95% CI over 10 seeds above 0)
  and at least as many on Lee and text8, at a quarter of the training (bench/results/cade.md).
- ``"cosine"``: 1 - cos(v_a(w), v_b(w)) of the word's two aligned vectors, CADE's own measure (Bianchi
  et al. 2020, "Compass-aligned Distributional Embeddings for Studying Semantic Differences across
  Corpora", arXiv 2004.06519: slices share the compass's frozen context matrix, so their vectors are
  directly comparable).
- ``"split_half"`` (the default before the context test): over the split-half replicates of both slices
  (components.cade.replicates), the mean distance of w across slices, over the four (half of a, half of
  b) pairs, divided by its mean distance within a slice, over (a1, a2) and (b1, b2):

      shift(w) = mean_r [d(a_i, b_j)] / mean_r [d(a1, a2), d(b1, b2)]        (i, j in {1, 2})

  A word whose use does not change moves across slices about as much as between two halves of one
  slice (shift ~ 1); a changed word moves more. Dividing by the word's own within-slice distance puts
  rare and frequent, focused and diffuse words on one scale; cosine alone ranks noisy words (function
  words, rare ones, whose vectors are far apart even within one slice) as most shifted. It is not in
  the CADE paper: bench/bench_cade_shift.py measures it beside the cosine (bench/results/cade.md).

``d`` is one of ``DISTANCES`` (the cosine distance by default; the benchmark measures the others):
``"centred"`` subtracts each model's mean vector over the compared words first (the vectors are
strongly anisotropic); ``"local"`` is the local neighborhood measure of Hamilton, Leskovec and
Jurafsky 2016 ("Cultural Shift or Linguistic Drift? Comparing Two Computational Measures of Semantic
Change", EMNLP, arXiv 1606.02821): the word's cosine similarities to the union of its k = 25 nearest
neighbours in both models form one vector per model, and the measure is the cosine distance between
the two vectors (it needs no alignment). Deviation: similarities are taken between mean-centred
vectors, because raw CBOW vectors of one slice are nearly all alike (cosine ~0.98). ``"anchors"`` is
a second-order profile: the correlation distance between the word's similarities to every compared
word in each model.

Significance: every row gets ``z`` and ``q``. For context, each word's own permutation null
(components.cade.contexts) gives ``p``, and ``q`` is Benjamini-Hochberg over the compared words. For
split_half, the null distribution comes from the slices' quarter replicates (``null_replicates``): two
quarters of one slice against the other two form a pseudo pair in which nothing changed, and the
measure is computed on it exactly as on the real pair (its halves are then quarters, so the null is a
little wider than the real pair's: conservative). The
log scores of these pseudo pairs, pooled over the compared words, both slices and the replicates, are
fitted with a Student t distribution (maximum likelihood: it keeps the heavy tail that words found in
few texts give), ``p`` is the fitted upper tail at the word's log score, and ``z`` the normal quantile of
``1 - p``. Without quarter replicates, and for the cosine measure, the null is estimated from the
compared words themselves instead: their log scores' median and MAD x 1.4826 (the robust form of
Efron 2004, "Large-Scale Simultaneous Hypothesis Testing: The Choice of a Null Hypothesis", JASA
99:96-104, which assumes most words did not change), with a normal tail. ``q`` is the
Benjamini-Hochberg (1995, JRSS-B 57:289-300) adjusted p-value over the compared words: q < 0.05 is a
shift at a 5% false discovery rate. Too few compared words (MIN_NULL_WORDS) or pseudo-pair scores
(MIN_NULL_SCORES) for a null give NaN. Both nulls assume a slice's texts are independent draws: texts
in clusters (chapters of one book, consecutive chunks of one article) make q optimistic.

Usage::

    from components.cade.shift import shift_scores
    frame = shift_scores(alignment, "news", "encyclopedia", min_count=20)
    frame.head()        # word, shift, z, q, cosine, count_a, count_b; most shifted first
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
import pandas as pd
from gensim.models import KeyedVectors
from scipy.stats import false_discovery_control, norm, t

from components.cade.alignment import Alignment
from components.cade.contexts import DEFAULT_PERMUTATIONS, context_test
from components.cade.errors import CadeError

MEASURES = ("context", "split_half", "cosine")
DISTANCES = ("cosine", "centred", "local", "anchors")
# Below this many compared words the median/MAD of their scores is no estimate of a null distribution
# (a handful of words, any of which may have shifted); z and q are then NaN rather than invented.
MIN_NULL_WORDS = 30
MIN_NULL_SCORES = 2 * MIN_NULL_WORDS  # pseudo-pair scores needed to fit the quarter null
LOCAL_NEIGHBOURS = 25  # Hamilton et al. 2016 use k = 25
SCORE_COLUMNS = ["word", "shift", "z", "q", "cosine", "count_a", "count_b"]
Distance = Callable[[KeyedVectors, KeyedVectors, Sequence[str]], np.ndarray]  # (kv_x, kv_y, words) -> distances


def eligible_words(alignment: Alignment, a: str, b: str, min_count: int, exclude: Collection[str] = ()) -> list[str]:
    """Words with count >= min_count in both slices, not in ``exclude``, in slice ``a``'s order."""
    kv_a, kv_b = alignment.vectors(a), alignment.vectors(b)
    exclude = set(exclude)
    counts_a = kv_a.expandos["count"]
    return [w for w, n in zip(kv_a.index_to_key, counts_a)
            if n >= min_count and w not in exclude and w in kv_b.key_to_index and kv_b.get_vecattr(w, "count") >= min_count]


def _rows(kv: KeyedVectors, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(float64 vectors of the words, mask of words present), zero rows for absent words."""
    present = np.fromiter((w in kv.key_to_index for w in words), dtype=bool, count=len(words))
    out = np.zeros((len(words), kv.vector_size), dtype=np.float64)
    if present.any():
        out[present] = kv.vectors[[kv.key_to_index[w] for w, p in zip(words, present) if p]]
    return out, present


def _unit(x: np.ndarray) -> np.ndarray:
    lengths = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(lengths > 0, lengths, 1.0)


def pair_distance(kv_x: KeyedVectors, kv_y: KeyedVectors, words: Sequence[str], distance: str = "cosine") -> np.ndarray:
    """Per word, the distance between its vectors in two aligned models (NaN where one lacks it).

    ``local`` and ``anchors`` compare the word with the other ``words`` (its candidate neighbours and
    anchors), so they need the same word list on both sides."""
    if distance not in DISTANCES:
        raise CadeError(f"unknown distance {distance!r}; expected one of {', '.join(DISTANCES)}")
    x, in_x = _rows(kv_x, words)
    y, in_y = _rows(kv_y, words)
    both = in_x & in_y
    out = np.full(len(words), np.nan)
    if not both.any():
        return out
    x, y = x[both], y[both]
    if distance == "cosine":
        out[both] = 1.0 - np.einsum("ij,ij->i", _unit(x), _unit(y))
        return out
    x, y = _unit(x - x.mean(0)), _unit(y - y.mean(0))
    if distance == "centred":
        out[both] = 1.0 - np.einsum("ij,ij->i", x, y)
        return out
    sim_x, sim_y = x @ x.T, y @ y.T  # [n, n] similarities inside each model
    if distance == "anchors":
        np.fill_diagonal(sim_x, 0.0)
        np.fill_diagonal(sim_y, 0.0)
        sx, sy = sim_x - sim_x.mean(1, keepdims=True), sim_y - sim_y.mean(1, keepdims=True)
        out[both] = 1.0 - np.einsum("ij,ij->i", _unit(sx), _unit(sy))
        return out
    # local: Hamilton et al. 2016's local neighborhood measure on the union of each model's k nearest
    # neighbours (self excluded)
    k = min(LOCAL_NEIGHBOURS, len(x) - 1)
    if k < 1:
        return out
    np.fill_diagonal(sim_x, -np.inf)
    np.fill_diagonal(sim_y, -np.inf)
    near = np.concatenate([np.argpartition(-sim_x, k - 1, axis=1)[:, :k], np.argpartition(-sim_y, k - 1, axis=1)[:, :k]], 1)
    local = np.empty(len(x))
    for i, cols in enumerate(near):
        cols = np.unique(cols)
        sx, sy = sim_x[i, cols], sim_y[i, cols]
        local[i] = 1.0 - sx @ sy / max(np.linalg.norm(sx) * np.linalg.norm(sy), 1e-12)
    out[both] = local
    return out


def split_half_ratio(alignment: Alignment, a: str, b: str, words: Sequence[str], distance: str = "cosine"
                     ) -> tuple[np.ndarray, int]:
    """(the split_half shift of each word, replicates used). A word absent from a half in some replicate
    is scored on the other replicates; NaN if none has it in all four halves."""
    cross, within, used = split_half_distances(alignment, a, b, words, distance)
    return cross / within, used


def split_half_distances(alignment: Alignment, a: str, b: str, words: Sequence[str], distance: str | Distance = "cosine"
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """(cross, within, replicates used): per word, the mean distance between a half of ``a`` and a half
    of ``b``, and the mean distance between the two halves of one slice, over the replicates that have
    the word in all four halves (NaN where none has; within floored at 1e-12). ``distance``: a
    ``DISTANCES`` name, or a function (kv_x, kv_y, words) -> per-word distances (NaN where one lacks the
    word), as the planted-shift benchmark's candidates are."""
    measure = distance if callable(distance) else lambda x, y, w: pair_distance(x, y, w, distance)
    reps_a, reps_b = alignment.replicates.get(a, []), alignment.replicates.get(b, [])
    used = min(len(reps_a), len(reps_b))
    if used == 0:
        missing = [n for n, reps in ((a, reps_a), (b, reps_b)) if not reps]
        raise CadeError(f"the split_half measure needs split-half replicates; slice(s) {', '.join(map(repr, missing))} "
                        "have none (settings.replicates = 0, or a slice of a single text); use measure='cosine'")
    cross = np.zeros(len(words))
    within = np.zeros(len(words))
    seen = np.zeros(len(words))
    for (a1, a2), (b1, b2) in zip(reps_a[:used], reps_b[:used]):
        w = (measure(a1, a2, words) + measure(b1, b2, words)) / 2
        c = sum(measure(x, y, words) for x in (a1, a2) for y in (b1, b2)) / 4
        ok = np.isfinite(w) & np.isfinite(c)
        cross[ok] += c[ok]
        within[ok] += w[ok]
        seen[ok] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        cross = np.where(seen > 0, cross / seen, np.nan)
        within = np.where(seen > 0, np.maximum(within / seen, 1e-12), np.nan)
    return cross, within, used


def usable_measure(alignment: Alignment, a: str, b: str, measure: str) -> tuple[str, str | None]:
    """(the measure a table of (a, b) can use, why it differs from ``measure``): context needs both
    slices' texts (an alignment saved before they were kept has none), split_half replicates of both
    slices (a slice of a single text has none); cosine is used otherwise."""
    if measure == "context":
        missing = [n for n in (a, b) if n not in alignment.texts]
        if not missing:
            return measure, None
        return "cosine", (f"slice(s) {', '.join(missing)} have no texts in this alignment (saved before the context "
                          "measure; run cade_align again): ranked by cosine instead of context")
    if measure != "split_half":
        return measure, None
    missing = [n for n in (a, b) if not alignment.replicates.get(n)]
    if not missing:
        return measure, None
    return "cosine", (f"slice(s) {', '.join(missing)} have no split-half replicates (replicates=0, or a single "
                      "text): ranked by cosine instead of split_half")


def pseudo_pair_scores(alignment: Alignment, a: str, b: str, words: Sequence[str], distance: str = "cosine"
                       ) -> np.ndarray:
    """The null sample of the split_half measure: for each quarter replicate (q1..q4) of slices ``a``
    and ``b``, the log split_half score of every word between {q1, q2} and {q3, q4} (finite ones only)."""
    scores = []
    for name in (a, b):
        for q1, q2, q3, q4 in alignment.null_replicates.get(name, []):
            within = (pair_distance(q1, q2, words, distance) + pair_distance(q3, q4, words, distance)) / 2
            cross = sum(pair_distance(x, y, words, distance) for x in (q1, q2) for y in (q3, q4)) / 4
            with np.errstate(invalid="ignore", divide="ignore"):
                scores.append(np.log(cross / within))
    values = np.concatenate(scores) if scores else np.zeros(0)
    return values[np.isfinite(values)]


def significance(shift: np.ndarray, counts: np.ndarray | None = None, window: int = 0,
                 null: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(z, q) of each score (see the module docstring).

    ``null``: log scores of pseudo pairs (:func:`pseudo_pair_scores`): p from a Student t fitted to them.
    Otherwise the empirical null of the scores themselves; with ``window`` > 0 and ``counts``, one per
    frequency stratum (Efron 2008, "Simultaneous inference: when should hypothesis testing problems be
    combined?", Ann. Appl. Stat. 2:197-223): each word centred and scaled by the ``window`` words nearest
    to it in count (measured, not used by default). NaN for every word when fewer than MIN_NULL_WORDS
    scores are finite (or the null has fewer than MIN_NULL_SCORES), and for a NaN score."""
    z = np.full(len(shift), np.nan)
    q = np.full(len(shift), np.nan)
    finite = np.isfinite(shift) & (shift > 0)
    if finite.sum() < MIN_NULL_WORDS:
        return z, q
    logs = np.log(shift[finite])
    if null is not None:
        if len(null) < MIN_NULL_SCORES:
            return z, q
        df, loc, scale = t.fit(null)
        p = t.sf(logs, df, loc, scale)
        z[finite] = norm.isf(np.clip(p, 1e-300, 1.0))
        q[finite] = false_discovery_control(p, method="bh")
        return z, q
    if window > 0 and counts is not None and finite.sum() >= 2 * window:
        order = np.argsort(np.asarray(counts)[finite], kind="stable")
        values = np.empty(len(logs))
        for pos, i in enumerate(order):
            start = max(0, min(pos - window // 2, len(order) - window))
            values[i] = _robust_z(logs[order[start : start + window]], logs[i])
    else:
        values = _robust_z(logs, logs)
    if not np.isfinite(values).all():
        return z, q
    z[finite] = values
    q[finite] = false_discovery_control(norm.sf(values), method="bh")
    return z, q


def _robust_z(reference: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD) of ``reference``: a normal null's centre and scale, robust to the few
    shifted words (NaN when the MAD is 0)."""
    centre = np.median(reference)
    scale = 1.4826 * np.median(np.abs(reference - centre))
    return (x - centre) / scale if scale > 0 else np.full(np.shape(x), np.nan)


def shift_scores(
    alignment: Alignment,
    a: str,
    b: str,
    min_count: int,
    measure: str = "context",
    exclude: Collection[str] = (),
    distance: str = "cosine",
    context_layout: str = "sides",
    permutations: int = DEFAULT_PERMUTATIONS,
) -> pd.DataFrame:
    """Every word with count >= min_count in both slices: most shifted first (ties by word; the
    context measure ranks by z, then shift).

    Columns: word, shift (the measure's score; context and split_half: ~1 unchanged, higher = shifted;
    cosine: 1 - cosine), z and q (significance, module docstring), cosine (of the word's two full-slice
    vectors, for reference whatever the measure), count_a, count_b. ``context_layout`` and
    ``permutations`` are the context test's (components.cade.contexts). ``df.attrs``: a, b, min_count,
    measure, distance, eligible (the number of words compared), replicates (used; 0 unless split_half),
    null ("permutation", "quarters" or "empirical") and null_scores (the pseudo-pair scores it was fitted
    to; for context, the relabellings per word)."""
    if measure not in MEASURES:
        raise CadeError(f"unknown shift measure {measure!r}; expected one of {', '.join(MEASURES)}")
    kv_a, kv_b = alignment.vectors(a), alignment.vectors(b)
    words = eligible_words(alignment, a, b, min_count, exclude)
    cosine = 1.0 - pair_distance(kv_a, kv_b, words, "cosine") if words else np.zeros(0)
    used, null, null_kind = 0, None, "permutation" if measure == "context" else "empirical"
    if not words:
        shift = np.zeros(0)
    elif measure == "cosine":
        shift = 1.0 - cosine if distance == "cosine" else pair_distance(kv_a, kv_b, words, distance)
    elif measure == "context":
        test = context_test(alignment, a, b, words, layout=context_layout, permutations=permutations)
        shift, null_kind = test.shift, "permutation"
    else:
        shift, used = split_half_ratio(alignment, a, b, words, distance)
        if alignment.null_replicates.get(a) or alignment.null_replicates.get(b):
            null, null_kind = pseudo_pair_scores(alignment, a, b, words, distance), "quarters"
    if measure == "context" and words:
        z, q = test.z, np.full(len(words), np.nan)
        tested = np.isfinite(test.p)
        if tested.any():
            q[tested] = false_discovery_control(test.p[tested], method="bh")
    else:
        z, q = significance(shift, null=null) if words else (np.zeros(0), np.zeros(0))
    frame = pd.DataFrame({
        "word": pd.Series(words, dtype=object),
        "shift": shift.astype(np.float64),
        "z": z,
        "q": q,
        "cosine": cosine.astype(np.float64),
        "count_a": np.fromiter((kv_a.get_vecattr(w, "count") for w in words), dtype=np.int64, count=len(words)),
        "count_b": np.fromiter((kv_b.get_vecattr(w, "count") for w in words), dtype=np.int64, count=len(words)),
    })
    keys = ["_key", "word"]
    frame = frame.assign(_key=-frame["shift"].fillna(-np.inf))
    if measure == "context":
        keys = ["_z", *keys]
        frame = frame.assign(_z=-frame["z"].fillna(-np.inf))
    frame = frame.sort_values(keys, kind="stable").drop(columns=keys[:-1]).reset_index(drop=True)
    frame.attrs.update({"a": a, "b": b, "min_count": min_count, "measure": measure, "distance": distance,
                        "eligible": len(words), "replicates": used, "null": null_kind,
                        "null_scores": permutations if measure == "context" else 0 if null is None else len(null)})
    if measure == "context":
        frame.attrs.update({"texts_a": len(alignment.texts[a]), "texts_b": len(alignment.texts[b])})
    return frame
