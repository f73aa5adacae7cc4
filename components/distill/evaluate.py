"""Scoring generations for side-by-side model comparison: ROUGE-L against references, degeneration
(repeated 4-grams, distinct-2) and a paired bootstrap confidence interval of a difference.

Example::

    rouge_l(["the cat sat"], ["a cat sat down"])              # [0.571...], F-measure per pair
    repetition_share(["a b c d a b c d a b c d", "fine"])     # 0.5: one of two has a 4-gram 3+ times
    distinct_n(["a b a b", "c d"], 2)                         # 3 distinct bigrams of 4 -> 0.75
    paired_bootstrap([0.3, 0.5, 0.4], [0.2, 0.4, 0.4])        # Interval(mean=0.0667, low=..., high=...)
"""

from __future__ import annotations

import re
from collections import Counter
from typing import NamedTuple

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F-measure per pair (rouge-score, Porter stemming as in the DistiLLM/MiniLLM evaluations)."""
    # Imported here: rouge-score pulls nltk, which a GPU worker that only trains and generates lacks.
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]


def _words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower())


def repeats_ngram(text: str, n: int = 4, times: int = 3) -> bool:
    """Whether some word n-gram occurs `times` or more times in `text` (lowercased words): the
    "The world of the / The world of the / ..." loop a degenerate student writes."""
    words = _words(text)
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return any(c >= times for c in counts.values())


def repetition_share(texts: list[str], n: int = 4, times: int = 3) -> float:
    """Share of texts with a word n-gram repeated `times`+ times (0 for no texts)."""
    return float(np.mean([repeats_ngram(t, n, times) for t in texts])) if texts else 0.0


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): distinct word n-grams / all word n-grams over the texts together
    (0 when there are none). Low values mean the outputs reuse the same few phrases."""
    grams = [tuple(w[i : i + n]) for w in map(_words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


class Interval(NamedTuple):
    mean: float
    low: float
    high: float


def paired_bootstrap(after: list[float], before: list[float], samples: int = 10000, seed: int = 0,
                     confidence: float = 0.95) -> Interval:
    """Mean of the per-item differences after - before and its percentile bootstrap CI (scipy.stats.
    bootstrap over items: both scores of an item are resampled together, so the interval reflects
    item-to-item variation of the difference, not of either score)."""
    from scipy.stats import bootstrap

    diff = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if diff.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    if diff.size == 1 or np.allclose(diff, diff[0]):
        return Interval(float(diff.mean()), float(diff.mean()), float(diff.mean()))
    ci = bootstrap((diff,), np.mean, n_resamples=samples, confidence_level=confidence, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return Interval(float(diff.mean()), float(ci.low), float(ci.high))


def degeneration(texts: list[str]) -> dict[str, float]:
    """repetition_share (4-gram 3+ times) and distinct_2 of a set of outputs."""
    return {"repetition_share": repetition_share(texts), "distinct_2": distinct_n(texts, 2)}
