"""ROUGE-L of greedy generations against references, for side-by-side model comparison.

Example::

    scores = rouge_l(["the cat sat"], ["a cat sat down"])     # [0.571...], F-measure per pair
"""

from __future__ import annotations


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F-measure per pair (rouge-score, Porter stemming as in the DistiLLM/MiniLLM evaluations)."""
    # Imported here: rouge-score pulls nltk, which a GPU worker that only trains and generates lacks.
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
