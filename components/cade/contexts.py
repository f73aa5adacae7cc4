"""The context test: does a word occur in other contexts in slice b than in slice a, tested over their texts.

Why a test over occurrences. CADE (Bianchi et al. 2020, arXiv 2004.06519, Section 3) trains a slice's
word vector ``v_w`` with the compass's context matrix ``U`` frozen. With CBOW and negative sampling,
each window around an occurrence of ``w`` moves ``v_w`` by a weighted sum of ``U`` rows (the window's
target and its negatives: Mikolov et al. 2013, arXiv 1310.4546, Eq. 4; Rong 2014, arXiv 1411.2738,
Section 3.2): from a small random start, to first order, ``v_w`` in a slice is the sum of the ``U`` rows
of the words around ``w``'s occurrences there, less a constant. So the mean ``c_w`` of those rows over
``w``'s occurrences is the linearised CADE vector of ``w`` in a slice, and, unlike ``v_w``, it is a sum
over occurrences: the two slices' ``c_w`` can be compared with a permutation test over the texts
that hold ``w``, which needs no replicate training and gives every word its own, exact null.

Definition. For an occurrence ``i`` of ``w`` its context vector ``x_i`` is the weighted mean of the
frozen ``U`` rows of the words within ``window`` positions of it in its text (``w`` itself excluded
where it recurs, words outside the compass vocabulary skipped), weight ``(window - d + 1) / window`` at
distance ``d``: the expected weight word2vec's reduced windows give (the "dynamic context window" of
Levy, Goldberg and Dagan 2015, "Improving Distributional Similarity with Lessons Learned from Word
Embeddings", TACL 3). ``layout="sides"`` (the default) keeps the left and the
right window as two halves of ``x_i`` (position-aware, like the structured skip-gram of Ling et al.
2015, "Two/Too Simple Adaptations of Word2Vec for Syntax Problems", NAACL): "the period of" and
"of the period" put the same words on different sides, which one mean over the window cannot tell.
A side with no context word (a text's first or last token) gets that side's mean over all
occurrences, which favours neither slice. ``layout="window"`` is the single window mean, the plain
linearised CADE vector.

The statistic is ``T_w = ||mean_a(x) - mean_b(x)||^2`` over ``w``'s occurrences in each slice.

Null: a slice's texts are exchangeable between the two slices (the word's use does not depend on
which slice a text came from). The texts holding ``w`` are relabelled at random, each slice keeping
its number of them, and ``T`` recomputed: whole texts move, so occurrences that cluster in one text move
together (a text that uses a word in one odd way is not read as a shift). With at most
``permutations`` distinct relabellings all are enumerated and ``p`` is exact. Otherwise
``permutations`` random ones are drawn. Where at least MIN_EXCEEDANCES of them reach the observed
``T``, ``p`` is their share (Monte Carlo, (1 + hits) / (permutations + 1)); further out, where that
share has no resolution, the null's mean, variance and skewness give ``p`` as the upper tail of a
shifted, scaled chi-square with those three moments (Pearson 1959, "Note on an approximation to
the distribution of non-central chi-squared", Biometrika 46:364; Imhof 1961, Biometrika 48:419,
compares it with the exact distribution): ``T`` is a sum of squares, and the fitted tail lets ``p``
go below ``1 / (permutations + 1)`` so that the words can be ranked and corrected for multiplicity. It is an
approximation: against 200,000 relabellings of a continuous case it was within 1.5x
(tests/components/test_cade_contexts.py), on a null of a few distinct values (a word in few texts)
within 5x; in the benchmark's null runs (bench/results/cade.md) it was calibrated, about 5 % of
unchanged words below 0.05 and no word at q < 0.05, where two moments (a scaled chi-square) were
liberal in the far tail.

Reported per word: ``shift = T / E_null[T]`` (about 1 for an unchanged word: the distance between
the slices' mean contexts over what relabelling texts gives), ``p``, ``z = Phi^-1(1 - p)``.

Usage::

    from components.cade.contexts import context_test
    result = context_test(alignment, "news", "encyclopedia", words)   # needs alignment.texts
    result.shift, result.p, result.z                                   # per word, in ``words`` order
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import chi2, norm, skew

from components.cade.errors import CadeError

LAYOUTS = ("sides", "window")
DEFAULT_PERMUTATIONS = 1000
# Below this many relabellings at or above the observed T, their share is too coarse a p (it cannot go
# under 1 / (permutations + 1)): the fitted tail takes over.
MIN_EXCEEDANCES = 10
# The test holds the context vectors of at most this many occurrences at a time (both slices; about
# 5 KB each at 100 dimensions, so ~0.5 GB): larger slices are tested a block of words at a time, with
# the same p values up to rounding (the fill is summed in another order; the relabellings are drawn in
# the same order). Each block rescans the slices' token arrays: cheap beside the occurrence vectors.
MAX_OCCURRENCES = 100_000


@dataclass
class ContextSums:
    """Per compared word (``words`` order), over the texts of one slice that hold it: the sum of its
    occurrences' context vectors in each text (``sums[i]``, shape [texts, dim]) and how many
    occurrences each text holds (``counts[i]``)."""

    sums: list[np.ndarray]
    counts: list[np.ndarray]


@dataclass
class ContextTest:
    """Per word, in the order the words were given: ``shift`` (T over its null mean), ``p`` and ``z``
    (NaN where the word is missing from a slice)."""

    shift: np.ndarray
    p: np.ndarray
    z: np.ndarray


def _weights(window: int) -> np.ndarray:
    return np.array([(window - d + 1) / window for d in range(1, window + 1)], dtype=np.float64)


@dataclass
class Occurrences:
    """Every occurrence of the compared words in one slice's texts: which word (index into the word
    list), which text, and the weighted sum and weight of its left and right context (``sums`` [2, n,
    dim], ``mass`` [2, n]; side 0 is the left)."""

    word: np.ndarray
    text: np.ndarray
    sums: np.ndarray
    mass: np.ndarray

    def side_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(sum over occurrences of each side's mean context [2, dim], occurrences with that side [2])."""
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self.sums / self.mass[..., None]
        has = self.mass > 0
        return np.stack([means[s][has[s]].sum(0) for s in (0, 1)]), has.sum(1)


@dataclass
class Tokens:
    """One slice's texts flattened: the compass row of every token (``ids``, -1 outside the compass
    vocabulary), which compared word it is (``which``, -1 for none) and which text holds it."""

    ids: np.ndarray
    which: np.ndarray
    text_of: np.ndarray

    def counts(self, n_words: int) -> np.ndarray:
        """Occurrences of each compared word."""
        return np.bincount(self.which[self.which >= 0], minlength=n_words)


def tokens(texts: Sequence[list[str]], words: Sequence[str], key_to_index: dict[str, int]) -> Tokens:
    """``texts`` (lists of tokens) as ``Tokens``: one pass over them, shared by every block of words."""
    target = {w: i for i, w in enumerate(words)}
    ids = np.fromiter((key_to_index.get(t, -1) for s in texts for t in s), dtype=np.int64)
    which = np.fromiter((target.get(t, -1) for s in texts for t in s), dtype=np.int64, count=len(ids))
    lengths = np.fromiter((len(s) for s in texts), dtype=np.int64, count=len(texts))
    return Tokens(ids=ids, which=which, text_of=np.repeat(np.arange(len(texts)), lengths))


def collect(tok: Tokens, context: np.ndarray, window: int, start: int = 0, stop: int | None = None) -> Occurrences:
    """The context of every occurrence of the compared words ``start`` to ``stop`` (their indices
    relative to ``start`` in ``Occurrences.word``), from the frozen compass ``context`` rows (module
    docstring). A window never crosses a text's end; the word itself is skipped where it recurs."""
    if window < 1:
        raise CadeError(f"context window must be >= 1, got {window}")
    chosen = tok.which >= start
    if stop is not None:
        chosen &= tok.which < stop
    positions = np.flatnonzero(chosen)
    ids, text_of = tok.ids, tok.text_of
    table = np.asarray(context, dtype=np.float64)
    sums = np.zeros((2, len(positions), table.shape[1]))
    mass = np.zeros((2, len(positions)))
    for d, weight in enumerate(_weights(window), start=1):
        for side, neighbour in ((0, positions - d), (1, positions + d)):
            ok = (neighbour >= 0) & (neighbour < len(ids))
            at, nb = positions[ok], neighbour[ok]
            keep = (text_of[nb] == text_of[at]) & (ids[nb] >= 0) & (tok.which[nb] != tok.which[at])
            rows = np.flatnonzero(ok)[keep]
            sums[side, rows] += weight * table[ids[nb[keep]]]
            mass[side, rows] += weight
    return Occurrences(word=tok.which[positions] - start, text=text_of[positions], sums=sums, mass=mass)


def occurrences(texts: Sequence[list[str]], words: Sequence[str], key_to_index: dict[str, int],
                context: np.ndarray, window: int) -> Occurrences:
    """The context of every occurrence of ``words`` in ``texts`` (module docstring), from the frozen
    compass ``context`` rows. A window never crosses a text's end."""
    return collect(tokens(texts, words, key_to_index), context, window)


def blocks(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive word ranges [start, stop) of at most ``budget`` occurrences each (a word with more
    gets a range of its own, with at most zero-count words beside it): the context test holds one
    range's occurrence vectors at a time."""
    out, start, held = [], 0, 0
    for i, n in enumerate(counts.tolist()):
        if held and held + n > budget:
            out.append((start, i))
            start, held = i, 0
        held += n
    out.append((start, len(counts)))
    return out


def features(occ: Occurrences, layout: str, fill: np.ndarray) -> np.ndarray:
    """One context vector per occurrence: ``sides`` [left mean, right mean], a side without any
    context word filled with ``fill[side]``; ``window`` the weighted mean over both sides."""
    if layout not in LAYOUTS:
        raise CadeError(f"unknown context layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if layout == "sides":
        with np.errstate(invalid="ignore", divide="ignore"):
            means = occ.sums / occ.mass[..., None]
        for side in (0, 1):
            means[side, occ.mass[side] == 0] = fill[side]
        return np.concatenate([means[0], means[1]], axis=1)
    total = occ.mass.sum(0)
    out = np.empty(occ.sums.shape[1:])
    has = total > 0
    out[has] = occ.sums[:, has].sum(0) / total[has, None]
    out[~has] = fill.mean(0)
    return out


def per_text(occ: Occurrences, vectors: np.ndarray, n_words: int) -> ContextSums:
    """Group occurrence vectors by (word, text): the sums and counts the permutation test relabels."""
    n_texts = int(occ.text.max()) + 1 if len(occ.text) else 1
    unique, inverse = np.unique(occ.word * n_texts + occ.text, return_inverse=True)
    sums = np.zeros((len(unique), vectors.shape[1]))
    np.add.at(sums, inverse, vectors)
    counts = np.bincount(inverse, minlength=len(unique)).astype(np.float64)
    bounds = np.searchsorted(unique // n_texts, np.arange(n_words + 1))
    cut = list(zip(bounds[:-1], bounds[1:]))
    return ContextSums(sums=[sums[i:j] for i, j in cut], counts=[counts[i:j] for i, j in cut])


def side_fill(occs: Iterable[Occurrences]) -> np.ndarray:
    """Each side's mean context over the occurrences of all the given slices [2, dim]: what a side with
    no context word is filled with (it favours no slice). ``occs`` may be a generator: each is read once."""
    totals = [occ.side_totals() for occ in occs]
    return sum(t for t, _ in totals) / np.maximum(sum(n for _, n in totals), 1)[:, None]


def text_sums(occs: Sequence[Occurrences], layout: str, n_words: int, fill: np.ndarray | None = None
              ) -> list[ContextSums]:
    """Each slice's occurrence vectors (``layout``) grouped by word and text; a side with no context word
    is filled with ``fill`` (by default ``side_fill`` of these occurrences)."""
    fill = side_fill(occs) if fill is None else fill
    return [per_text(occ, features(occ, layout, fill), n_words) for occ in occs]


def _statistics(sums: np.ndarray, counts: np.ndarray, in_a: np.ndarray) -> np.ndarray:
    """T for each row of the 0/1 matrix ``in_a`` [relabellings, texts]."""
    sum_a, count_a = in_a @ sums, in_a @ counts
    mean_a = sum_a / count_a[:, None]
    mean_b = (sums.sum(0) - sum_a) / (counts.sum() - count_a)[:, None]
    return ((mean_a - mean_b) ** 2).sum(1)


def permutation_p(sums: np.ndarray, counts: np.ndarray, n_a: int, permutations: int, rng: np.random.Generator
                  ) -> tuple[float, float, bool]:
    """(T / E_null[T], p, exact) for one word: ``sums``/``counts`` per text, the first ``n_a`` texts in
    slice a (module docstring: exact enumeration, or three moments of random relabellings)."""
    n = len(counts)
    observed = np.zeros((1, n))
    observed[0, :n_a] = 1.0
    t_obs = float(_statistics(sums, counts, observed)[0])
    if math.comb(n, n_a) <= permutations:
        labels = np.zeros((math.comb(n, n_a), n))
        for row, chosen in enumerate(combinations(range(n), n_a)):
            labels[row, list(chosen)] = 1.0
        null = _statistics(sums, counts, labels)
        mean = float(null.mean())
        return (t_obs / mean if mean > 0 else 1.0), float((null >= t_obs * (1 - 1e-12)).mean()), True
    chosen = np.argsort(rng.random((permutations, n)), axis=1)[:, :n_a]
    labels = np.zeros((permutations, n))
    np.put_along_axis(labels, chosen, 1.0, axis=1)
    null = _statistics(sums, counts, labels)
    mean, var = float(null.mean()), float(null.var())
    ratio = t_obs / mean if mean > 0 else 1.0
    exceed = int((null >= t_obs * (1 - 1e-12)).sum())
    if exceed >= MIN_EXCEEDANCES or var <= 0:
        # the relabellings resolve this p themselves (and a lumpy null, a word in a few texts with many
        # uses each, is what a fitted tail would get wrong)
        return ratio, (1 + exceed) / (permutations + 1), False
    g = float(skew(null))
    if g <= 1e-3:  # no right skew to fit: the normal tail
        return ratio, float(norm.sf((t_obs - mean) / math.sqrt(var))), False
    nu = 8.0 / g ** 2
    scale = math.sqrt(var / (2 * nu))
    shift = mean - scale * nu
    return ratio, float(chi2.sf(max(t_obs - shift, 0.0) / scale, nu)), False


def smallest_p(texts_a: int, texts_b: int) -> float:
    """The smallest p the context test can give any word of two slices holding this many texts: a word in
    every text has C(texts_a + texts_b, texts_a) relabellings, the observed one among them (a word in
    fewer texts has fewer). Slices of a few long texts can show no shift at all."""
    return 1.0 / math.comb(texts_a + texts_b, texts_a) if texts_a and texts_b else 1.0


def context_test(alignment, a: str, b: str, words: Sequence[str], layout: str = "sides", window: int | None = None,
                 permutations: int = DEFAULT_PERMUTATIONS, seed: int | None = None) -> ContextTest:
    """The context test of ``words`` between slices ``a`` and ``b`` of ``alignment`` (its ``texts``,
    ``context`` and compass vocabulary). ``window`` and ``seed`` default to the alignment's settings."""
    for name in (a, b):
        if name not in alignment.texts:
            raise CadeError(f"the context measure needs slice {name!r}'s texts, which this alignment does not hold "
                            "(saved before they were kept: run the cade_align stage again, or use split_half/cosine)")
    if permutations < 10:
        raise CadeError(f"context test: permutations must be >= 10, got {permutations}")
    settings = alignment.settings
    window = settings.window if window is None else window
    seed = settings.seed if seed is None else seed
    if layout not in LAYOUTS:  # before any work
        raise CadeError(f"unknown context layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    keys = alignment.compass.key_to_index
    toks = [tokens(alignment.texts[name], words, keys) for name in (a, b)]
    table = np.asarray(alignment.context, dtype=np.float64)  # once, not per block (collect keeps it as is)
    spans = blocks(sum(tok.counts(len(words)) for tok in toks), MAX_OCCURRENCES)
    fill = None
    if len(spans) > 1:  # the fill is a mean over every block: one pass for it first
        fill = side_fill(collect(tok, table, window, *span) for span in spans for tok in toks)
    rng = np.random.default_rng([seed, zlib.crc32(a.encode("utf-8")), zlib.crc32(b.encode("utf-8"))])
    shift, p = np.full(len(words), np.nan), np.full(len(words), np.nan)
    for start, stop in spans:
        occs = [collect(tok, table, window, start, stop) for tok in toks]
        sums_a, sums_b = text_sums(occs, layout, stop - start, fill)
        for j in range(stop - start):
            n_a = len(sums_a.counts[j])
            if n_a == 0 or len(sums_b.counts[j]) == 0:
                continue
            sums = np.concatenate([sums_a.sums[j], sums_b.sums[j]])
            counts = np.concatenate([sums_a.counts[j], sums_b.counts[j]])
            shift[start + j], p[start + j], _ = permutation_p(sums, counts, n_a, permutations, rng)
    z = np.where(np.isfinite(p), norm.isf(np.clip(p, 1e-300, 1.0)), np.nan)
    return ContextTest(shift=shift, p=p, z=z)
