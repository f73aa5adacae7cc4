"""CADE training settings: one frozen dataclass whose defaults and rules are those of the `cade:` config
section (semflow/config/cade.py, the one source), so a default is never written twice.

Usage::

    from components.cade.settings import CadeSettings
    settings = CadeSettings()                       # CBOW, 100 dims, window 5, negative 10, ...
    small = CadeSettings(vector_size=32, sg=1, slice_epochs=10, init="compass")
    CadeSettings.from_config(cfg.cade)              # the training fields of a validated config section
    small.word2vec_kwargs(epochs=small.compass_epochs)  # keyword arguments for gensim Word2Vec
    small.epochs(tokens=80_000, least=small.slice_epochs)  # epochs scaled to the text's size

A bad value raises :class:`~components.cade.errors.CadeError` naming the field and the rule it breaks
(the config section's own validation, run in strict mode: 5.0 is not an integer).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from components.cade.errors import CadeError
from semflow.config.cade import TRAINING_FIELDS, CadeConfig

INITS = ("hidden", "compass")


def _default(name: str) -> Any:
    return field(default=CadeConfig.model_fields[name].default)


@dataclass(frozen=True)
class CadeSettings:
    """Compass and slice training settings (the training fields of :class:`CadeConfig`).

    The first block mirrors gensim Word2Vec's arguments and CADE's defaults; ``init`` chooses the slice
    word vectors' starting point: ``"hidden"`` (random, CADE's default) or ``"compass"`` (a copy of the
    compass word vectors). The context (output) matrix of every slice is always the compass's, frozen.
    ``epoch_words`` scales epochs to the text's size (0: CADE's fixed epochs); ``replicates`` and
    ``null_replicates`` are the numbers of split-half and quarter replicates trained per slice
    (components.cade.replicates).
    """

    sg: int = _default("sg")  # 0: CBOW (mean of the context vectors), 1: skip-gram
    vector_size: int = _default("vector_size")
    window: int = _default("window")
    negative: int = _default("negative")  # hierarchical softmax is not supported
    min_count: int = _default("min_count")  # compass vocabulary: words seen this often over all slices
    sample: float = _default("sample")
    alpha: float = _default("alpha")  # decayed linearly to min_alpha over each model's training
    min_alpha: float = _default("min_alpha")
    compass_epochs: int = _default("compass_epochs")
    slice_epochs: int = _default("slice_epochs")
    epoch_words: int = _default("epoch_words")
    max_epochs: int = _default("max_epochs")
    init: str = _default("init")
    seed: int = _default("seed")
    workers: int = _default("workers")  # gensim's kernels release the GIL
    ns_exponent: float = _default("ns_exponent")
    batch_words: int = _default("batch_words")
    replicates: int = _default("replicates")
    null_replicates: int = _default("null_replicates")

    def __post_init__(self) -> None:
        try:
            CadeConfig.model_validate(self.to_dict(), strict=True)
        except ValidationError as err:
            first = err.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "min_alpha"  # the model validator's only rule
            message = first["msg"].removeprefix("Value error, ")
            raise CadeError(f"cade setting {name}={getattr(self, name, None)!r}: {message}") from None

    @classmethod
    def from_config(cls, cade: CadeConfig, **overrides: Any) -> CadeSettings:
        """The training settings of a `cade:` config section (its analysis fields are not training)."""
        return cls(**{name: getattr(cade, name) for name in TRAINING_FIELDS} | overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def epochs(self, tokens: int, least: int) -> int:
        """Epochs for a model of ``tokens`` words: at least ``least``, enough to train on ``epoch_words``
        words, at most ``max_epochs`` (never fewer than ``least``)."""
        if self.epoch_words <= 0 or tokens <= 0:
            return least
        return max(least, min(self.max_epochs, math.ceil(self.epoch_words / tokens)))

    def word2vec_kwargs(self, epochs: int) -> dict[str, Any]:
        """Keyword arguments for ``gensim.models.Word2Vec`` with these settings (no corpus)."""
        return dict(
            sg=self.sg, vector_size=self.vector_size, window=self.window, negative=self.negative, hs=0,
            min_count=self.min_count, sample=self.sample, alpha=self.alpha, min_alpha=self.min_alpha,
            epochs=epochs, seed=self.seed, workers=self.workers, ns_exponent=self.ns_exponent,
            batch_words=self.batch_words, cbow_mean=1,
        )

