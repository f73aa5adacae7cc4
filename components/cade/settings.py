"""CADE training settings: one frozen dataclass, defaults as in CADE/TWEC (Bianchi et al. 2020).

Usage::

    from components.cade.settings import CadeSettings
    settings = CadeSettings()                       # CBOW, 100 dims, window 5, negative 10, ...
    small = CadeSettings(vector_size=32, sg=1, slice_epochs=10, init="compass")
    small.word2vec_kwargs(epochs=small.compass_epochs)  # keyword arguments for gensim Word2Vec

A bad value raises :class:`~components.cade.errors.CadeError` naming the field and the allowed range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from components.cade.errors import CadeError

INITS = ("hidden", "compass")


@dataclass(frozen=True)
class CadeSettings:
    """Compass and slice training settings.

    The first block mirrors gensim Word2Vec's arguments and CADE's defaults; ``init`` chooses the slice
    word vectors' starting point: ``"hidden"`` (random, CADE's default) or ``"compass"`` (a copy of the
    compass word vectors). The context (output) matrix of every slice is always the compass's, frozen.
    """

    sg: int = 0  # 0: CBOW (mean of the context vectors), 1: skip-gram
    vector_size: int = 100
    window: int = 5
    negative: int = 10  # negative samples per prediction; hierarchical softmax is not supported
    min_count: int = 5  # compass vocabulary: words seen at least this often over all slices
    sample: float = 1e-3  # frequent-word downsampling threshold (0 disables it)
    alpha: float = 0.025  # learning rate, decayed linearly to min_alpha over each model's training
    min_alpha: float = 0.0001
    compass_epochs: int = 5
    slice_epochs: int = 5
    init: str = "hidden"
    seed: int = 0
    workers: int = 2  # training threads (gensim's kernels release the GIL)
    # Extra, not in CADE's signature:
    ns_exponent: float = 0.75  # shape of the negative-sampling distribution (count ** ns_exponent)
    batch_words: int = 10000  # words per training job, as gensim Word2Vec's batch_words

    def __post_init__(self) -> None:
        def check(ok: bool, field: str, rule: str) -> None:
            if not ok:
                raise CadeError(f"cade setting {field}={getattr(self, field)!r}: {rule}")

        for name in ("sg", "vector_size", "window", "negative", "min_count", "compass_epochs",
                     "slice_epochs", "seed", "workers", "batch_words"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool), name, "must be an integer")
        check(self.sg in (0, 1), "sg", "must be 0 (CBOW) or 1 (skip-gram)")
        check(self.vector_size >= 1, "vector_size", "must be at least 1")
        check(self.window >= 1, "window", "must be at least 1")
        check(self.negative >= 1, "negative", "must be at least 1 (CADE freezes the negative-sampling matrix)")
        check(self.min_count >= 1, "min_count", "must be at least 1")
        check(0 <= self.sample < 1, "sample", "must be in [0, 1)")
        check(0 < self.alpha <= 1, "alpha", "must be in (0, 1]")
        check(0 <= self.min_alpha <= self.alpha, "min_alpha", f"must be in [0, alpha={self.alpha}]")
        check(self.compass_epochs >= 1, "compass_epochs", "must be at least 1")
        check(self.slice_epochs >= 1, "slice_epochs", "must be at least 1")
        check(self.init in INITS, "init", f"must be one of {', '.join(INITS)}")
        check(self.seed >= 0, "seed", "must be >= 0")
        check(self.workers >= 1, "workers", "must be at least 1")
        check(0 <= self.ns_exponent <= 1, "ns_exponent", "must be in [0, 1]")
        check(self.batch_words >= 100, "batch_words", "must be at least 100")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def word2vec_kwargs(self, epochs: int) -> dict[str, Any]:
        """Keyword arguments for ``gensim.models.Word2Vec`` with these settings (no corpus)."""
        return dict(
            sg=self.sg, vector_size=self.vector_size, window=self.window, negative=self.negative, hs=0,
            min_count=self.min_count, sample=self.sample, alpha=self.alpha, min_alpha=self.min_alpha,
            epochs=epochs, seed=self.seed, workers=self.workers, ns_exponent=self.ns_exponent,
            batch_words=self.batch_words, cbow_mean=1,
        )
