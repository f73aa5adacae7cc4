"""Held-out log-likelihood of a slice's text under its CADE model (TWEC's ``evaluate``), to compare
settings and to check that a slice model fits its own slice better than another's.

Usage::

    from components.cade.text import split_heldout
    from components.cade.likelihood import log_likelihood, evaluate
    train, heldout = split_heldout(news_sentences, fraction=0.1, seed=0)
    ...  # align with {"news": train, ...}
    log_likelihood(alignment, "news", heldout).mean        # nats per predicted word, higher is better
    evaluate(alignment, {"news": heldout_news, "encyclopedia": heldout_wiki})   # one row per slice

Definition. The models are trained with negative sampling, whose scores ``s_w = u_w . h`` (``u_w`` a row of
the frozen context matrix, ``h`` the input) are not normalised probabilities. At the negative-sampling
optimum ``s_w = log p(w | h) - log(k q(w))`` (Levy & Goldberg 2014; ``q`` the noise distribution
``count ** 0.75``, ``k`` the number of negatives), so the model's own estimate of the conditional is

    p(w | h) = q(w) exp(s_w) / sum_v q(v) exp(s_v)            (softmax over the whole compass vocabulary)

We score held-out text with this distribution: it is exactly normalised, deterministic (no sampled
negatives), and, because every slice shares the same context matrix and ``q``, comparable across slices
and settings with the same compass. Reported as the mean log-probability per predicted word (nats), so
corpora of different sizes compare.

- CBOW (sg=0): each position's word is predicted from the mean of the slice vectors of the words within
  ``window`` on each side (full window, no downsampling, words outside the slice vocabulary left out);
  a position with no such context word is skipped.
- Skip-gram (sg=1): each word with a slice vector predicts every word within ``window`` on each side;
  the mean is over these (center, context) pairs.

Words outside the compass vocabulary can be neither predicted nor used, and are counted as skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.cade.alignment import Alignment

BATCH = 512  # predictions scored together: BATCH x vocabulary float64 scores in memory at once


@dataclass
class Likelihood:
    mean: float  # log p per prediction, nats (nan if nothing could be predicted)
    predictions: int
    skipped: int  # tokens outside the compass vocabulary + CBOW positions without context

    @property
    def perplexity(self) -> float:
        return float(np.exp(-self.mean)) if self.predictions else float("nan")


class _Scorer:
    """Accumulates (input vector, target index) pairs and scores them in batches."""

    def __init__(self, context: np.ndarray, log_q: np.ndarray):
        self.context, self.log_q = context.astype(np.float64), log_q
        self.inputs: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.pending = 0
        self.total, self.count = 0.0, 0

    def add(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        if len(targets):
            self.inputs.append(inputs)
            self.targets.append(targets)
            self.pending += len(targets)
            if self.pending >= BATCH:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        inputs, targets = np.vstack(self.inputs), np.concatenate(self.targets)
        for start in range(0, len(targets), BATCH):
            h, t = inputs[start : start + BATCH], targets[start : start + BATCH]
            logits = h @ self.context.T + self.log_q  # [batch, vocabulary]
            top = logits.max(axis=1)
            log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
            self.total += float((logits[np.arange(len(t)), t] - log_z).sum())
            self.count += len(t)
        self.inputs, self.targets, self.pending = [], [], 0


def log_likelihood(alignment: Alignment, name: str, sentences: Sequence[list[str]]) -> Likelihood:
    """Mean held-out log-likelihood of ``sentences`` under slice ``name``'s model (see module doc)."""
    kv = alignment.vectors(name)
    compass_index = alignment.compass.key_to_index
    window = alignment.settings.window
    size = alignment.settings.vector_size
    # compass row -> slice vector; words absent from the slice have none (mask False).
    vectors = np.zeros((len(compass_index), size))
    present = np.zeros(len(compass_index), dtype=bool)
    rows = np.fromiter((compass_index[w] for w in kv.index_to_key), dtype=np.int64, count=len(kv))
    vectors[rows] = kv.vectors
    present[rows] = True
    log_q = np.log(alignment.noise_distribution())
    scorer = _Scorer(alignment.context, log_q)
    skipped = 0
    for sentence in sentences:
        ids = np.fromiter((compass_index.get(w, -1) for w in sentence), dtype=np.int64, count=len(sentence))
        skipped += int((ids < 0).sum())
        ids = ids[ids >= 0]
        n = len(ids)
        if not n:
            continue
        mask = present[ids]
        if alignment.settings.sg == 0:
            # Window sums by prefix sums: sum over [i - window, i + window] minus position i itself.
            x = vectors[ids] * mask[:, None]
            csum = np.vstack([np.zeros((1, size)), np.cumsum(x, axis=0)])
            ccount = np.concatenate([[0], np.cumsum(mask)])
            lo = np.maximum(np.arange(n) - window, 0)
            hi = np.minimum(np.arange(n) + window + 1, n)
            sums = csum[hi] - csum[lo] - x
            counts = ccount[hi] - ccount[lo] - mask
            ok = counts > 0
            skipped += int((~ok).sum())
            scorer.add(sums[ok] / counts[ok, None], ids[ok])
        else:
            centers, targets = [], []
            for i in np.flatnonzero(mask):
                for j in range(max(0, i - window), min(n, i + window + 1)):
                    if j != i:
                        centers.append(ids[i])
                        targets.append(ids[j])
            if centers:
                scorer.add(vectors[np.asarray(centers)], np.asarray(targets, dtype=np.int64))
    scorer.flush()
    mean = scorer.total / scorer.count if scorer.count else float("nan")
    return Likelihood(mean=mean, predictions=scorer.count, skipped=skipped)


def evaluate(alignment: Alignment, heldout: Mapping[str, Sequence[list[str]]]) -> pd.DataFrame:
    """One row per slice: its held-out text scored by its own model.

    Columns: slice, log_likelihood (mean nats per prediction), perplexity, predictions, skipped. The
    prediction-weighted mean of log_likelihood over rows is the overall figure TWEC reports as a sum.
    """
    rows = []
    for name, sentences in heldout.items():
        result = log_likelihood(alignment, name, sentences)
        rows.append((name, result.mean, result.perplexity, result.predictions, result.skipped))
    columns = ["slice", "log_likelihood", "perplexity", "predictions", "skipped"]
    return pd.DataFrame.from_records(rows, columns=columns)
