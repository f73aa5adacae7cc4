"""Planted word swaps: the benchmark's way of making a known shift, and a self-check on a user's slices.

Swapping two words everywhere in one slice gives both the other's contexts there: each now "means"
what the other meant, while the other slice keeps their old use, so exactly the 2k swapped words
changed. The pairs are drawn from words of matched frequency (count >= min_count in both slices, the
two counts of a pair within MAX_COUNT_RATIO of each other in the swapped slice), so a swap does not
betray itself through a word's count.

The CADE paper (Bianchi et al. 2020, arXiv 2004.06519) stresses that alignment is reliable only
with enough shared vocabulary; whether *shifts* are found also depends on how much text each slice has.
:func:`self_check` answers that for the user's own pair: it plants swaps into a copy of the smaller
slice, trains that copy (and its split-half replicates; the significance null reuses the slices' quarter
replicates) against the same compass, and reports the share
of planted words the shift table calls significant (q < fdr): its recall for shifts of that frequency.

Usage::

    from components.cade.selfcheck import matched_pairs, swap_words, self_check
    pairs = matched_pairs(counts_a, counts_b, k=8, min_count=20, seed=0)    # [("court", "river"), ...]
    planted = swap_words(sentences_b, pairs)
    check = self_check(alignment, sentences, "teacher", "student_after", min_count=20)
    check.recall, check.table                     # share found; planted words with rank, shift, q
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from components.cade.alignment import Alignment
from components.cade.contexts import DEFAULT_PERMUTATIONS
from components.cade.errors import CadeError
from components.cade.replicates import train_replicates
from components.cade.shift import MIN_NULL_WORDS, shift_scores, usable_measure
from components.cade.slices import train_slice

MAX_COUNT_RATIO = 1.25
# Recall below this means the table misses most shifts of this frequency: a rule of thumb for a warning.
LOW_RECALL = 0.5


def matched_pairs(counts_a: Mapping[str, int], counts_b: Mapping[str, int], k: int, min_count: int, seed: int,
                  exclude: Collection[str] = ()) -> list[tuple[str, str]]:
    """Up to ``k`` disjoint word pairs to swap in slice b: both words with count >= min_count in both
    slices and not in ``exclude``, neighbours in the order of their count in b, counts within
    MAX_COUNT_RATIO. Seeded: the same inputs give the same pairs."""
    exclude = set(exclude)
    words = sorted((w for w, n in counts_a.items() if n >= min_count and counts_b.get(w, 0) >= min_count
                    and w not in exclude), key=lambda w: (counts_b[w], w))
    if len(words) < 2 or k <= 0:
        return []
    used: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for i in np.random.default_rng(seed).permutation(len(words) - 1):
        x, y = words[i], words[i + 1]
        if x in used or y in used or counts_b[y] > MAX_COUNT_RATIO * counts_b[x]:
            continue
        pairs.append((x, y))
        used.update((x, y))
        if len(pairs) == k:
            break
    return pairs


def swap_words(sentences: Sequence[list[str]], pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    """A copy of ``sentences`` with each pair's two words exchanged everywhere."""
    mapping = {x: y for x, y in pairs} | {y: x for x, y in pairs}
    return [[mapping.get(w, w) for w in sentence] for sentence in sentences]


@dataclass
class SelfCheck:
    """What :func:`self_check` found. ``recall``: share of planted words with q < fdr (NaN when nothing
    could be planted); ``table``: one row per planted word (word, partner, rank among the compared words,
    shift, z, q, found); ``planted_in``: the slice that got the swaps; ``message``: why it is low, if it is."""

    a: str
    b: str
    planted_in: str
    pairs: list[tuple[str, str]]
    eligible: int
    recall: float
    table: pd.DataFrame = field(repr=False)
    message: str | None = None


def self_check(
    alignment: Alignment,
    sentences: Mapping[str, Sequence[list[str]]],
    a: str,
    b: str,
    min_count: int,
    pairs: int = 4,
    measure: str = "context",
    exclude: Collection[str] = (),
    fdr: float = 0.05,
    seed: int = 0,
    context_layout: str = "sides",
    permutations: int = DEFAULT_PERMUTATIONS,
) -> SelfCheck:
    """Plant ``pairs`` matched-frequency swaps into the smaller of slices a and b (a copy) and report the
    share of the 2 x pairs planted words that the shift table of (a, b) calls significant.

    ``sentences``: the token lists each slice was trained on. Needs the in-memory alignment (its compass
    model), not one loaded from disk."""
    if alignment.model is None:
        raise CadeError("the self-check trains new slices against the compass: it needs the alignment align() "
                        "returned, not one loaded from disk")
    for name in (a, b):
        alignment.vectors(name)
        if name not in sentences:
            raise CadeError(f"self-check: no sentences given for slice {name!r}")
    target, other = (a, b) if alignment.tokens.get(a, 0) <= alignment.tokens.get(b, 0) else (b, a)
    counts_target, counts_other = alignment.word_counts(target), alignment.word_counts(other)
    eligible = sum(1 for w, n in counts_other.items() if n >= min_count and counts_target.get(w, 0) >= min_count
                   and w not in set(exclude))
    chosen = matched_pairs(counts_other, counts_target, pairs, min_count, seed, exclude)
    columns = ["word", "partner", "rank", "shift", "z", "q", "found"]
    if not chosen:
        return SelfCheck(a, b, target, [], eligible, float("nan"), pd.DataFrame(columns=columns),
                         f"self-check {a} vs {b}: only {eligible} word(s) occur >= {min_count} times in both "
                         "slices, nothing to plant: no shift of that frequency can be found")
    planted_name = f"{target}+planted"
    swapped = swap_words(sentences[target], chosen)
    settings = alignment.settings
    kv, _ = train_slice(alignment.model, alignment.context, planted_name, swapped, settings)
    copy = Alignment(settings=settings, compass=alignment.compass, context=alignment.context,
                     slices={other: alignment.slices[other], planted_name: kv},
                     tokens={other: alignment.tokens.get(other, 0), planted_name: alignment.tokens.get(target, 0)},
                     replicates={other: alignment.replicates.get(other, []),
                                 planted_name: train_replicates(alignment.model, alignment.context, planted_name,
                                                                swapped, settings)},
                     # the null needs no new training: pseudo pairs of the unswapped slice are as unchanged
                     null_replicates={other: alignment.null_replicates.get(other, []),
                                      planted_name: alignment.null_replicates.get(target, [])},
                     texts={other: alignment.texts.get(other, sentences[other]), planted_name: swapped})
    scores = shift_scores(copy, other, planted_name, min_count, usable_measure(copy, other, planted_name, measure)[0],
                          exclude, context_layout=context_layout, permutations=permutations)
    partner = {x: y for x, y in chosen} | {y: x for x, y in chosen}
    rank = {w: i + 1 for i, w in enumerate(scores["word"])}
    rows = scores[scores["word"].isin(partner)].set_index("word")
    table = pd.DataFrame({
        "word": list(partner),
        "partner": [partner[w] for w in partner],
        "rank": [rank.get(w, 0) for w in partner],
        "shift": [float(rows.loc[w, "shift"]) if w in rows.index else float("nan") for w in partner],
        "z": [float(rows.loc[w, "z"]) if w in rows.index else float("nan") for w in partner],
        "q": [float(rows.loc[w, "q"]) if w in rows.index else float("nan") for w in partner],
    })
    table["found"] = table["q"].lt(fdr)
    recall = float(table["found"].mean())
    message = None
    if recall < LOW_RECALL:
        why = (f"only {len(scores)} words are compared (fewer than {MIN_NULL_WORDS}: no significance)"
               if len(scores) < MIN_NULL_WORDS else f"{len(scores)} words compared")
        message = (f"self-check {a} vs {b}: {int(table['found'].sum())} of {len(table)} planted shifts found at "
                   f"q < {fdr} (recall {recall:.2f} < {LOW_RECALL}; {why}): shift tables of these slices miss most "
                   "real shifts of this frequency; more text per slice helps")
    return SelfCheck(a, b, target, chosen, eligible, recall, table, message)
