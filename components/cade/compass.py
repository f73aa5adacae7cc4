"""The compass: one gensim Word2Vec trained on the concatenation of all slices.

Its word vocabulary (indices, counts, downsampling thresholds), its negative-sampling table and its
context matrix ``syn1neg`` are what every slice model shares; the slices then train only their own word
vectors against that frozen context (see :mod:`components.cade.slices`).

Usage::

    from components.cade.compass import build_compass_vocab, train_compass
    model = build_compass_vocab(slices, settings)       # vocabulary only, checks every slice
    seconds, raw_words, effective_words = train_compass(model, slices, settings)
    model.syn1neg                                       # the context matrix the slices freeze
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence

from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec

from components.cade.errors import CadeError
from components.cade.settings import CadeSettings

Progress = Callable[[str, int, int], None]
COMPASS = "compass"


class _ConcatenatedSlices:
    """Re-iterable view of all slices' sentences in slice order, without copying them."""

    def __init__(self, slices: Mapping[str, Sequence[list[str]]]):
        self._slices = list(slices.values())

    def __iter__(self):
        return itertools.chain.from_iterable(self._slices)

    def __len__(self) -> int:
        return sum(len(s) for s in self._slices)


class _EpochProgress(CallbackAny2Vec):
    def __init__(self, progress: Progress, words_per_epoch: int, epochs: int):
        self.progress, self.words, self.epochs, self.epoch = progress, words_per_epoch, epochs, 0

    def on_epoch_end(self, model):
        self.epoch += 1
        self.progress(COMPASS, self.epoch * self.words, self.epochs * self.words)


def check_slices(slices: Mapping[str, Sequence[list[str]]]) -> None:
    """Raise CadeError unless there are >= 2 named slices, each with at least one token."""
    if len(slices) < 2:
        listed = ", ".join(map(str, slices)) or "none"
        raise CadeError(f"CADE needs at least 2 slices to align, got {len(slices)}: {listed}")
    for name, sentences in slices.items():
        if not isinstance(name, str) or not name.strip():
            raise CadeError(f"slice names must be non-empty strings, got {name!r}")
        if name == COMPASS:
            raise CadeError(f"slice name {COMPASS!r} is reserved for the compass")
        if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
            raise CadeError(
                f"slice {name!r} must be a list of token lists, not of strings "
                "(tokenise texts with components.cade.sentences_from_texts)"
            )
        if not any(len(s) for s in sentences):
            raise CadeError(f"slice {name!r} is empty: it has no tokens")


def build_compass_vocab(slices: Mapping[str, Sequence[list[str]]], settings: CadeSettings) -> Word2Vec:
    """An untrained compass Word2Vec with its vocabulary built over all slices.

    Fails before any training if a slice has no word in the compass vocabulary (every word it has is
    rarer than ``min_count`` over all slices), naming the slice.
    """
    check_slices(slices)
    model = Word2Vec(**settings.word2vec_kwargs(epochs=settings.compass_epochs))
    model.build_vocab(_ConcatenatedSlices(slices))
    if not model.wv.key_to_index:
        raise CadeError(
            f"the compass vocabulary is empty: no word occurs min_count={settings.min_count} times over all "
            f"slices ({model.corpus_total_words} tokens); lower min_count or add text"
        )
    vocab = model.wv.key_to_index
    for name, sentences in slices.items():
        if not any(w in vocab for s in sentences for w in s):
            raise CadeError(
                f"slice {name!r} has no word in the compass vocabulary: each of its words occurs fewer than "
                f"min_count={settings.min_count} times over all slices; lower min_count or add text to {name!r}"
            )
    return model


def train_compass(
    model: Word2Vec,
    slices: Mapping[str, Sequence[list[str]]],
    settings: CadeSettings,
    progress: Progress | None = None,
) -> tuple[float, int, int]:
    """Train the compass built by :func:`build_compass_vocab`.

    Returns (seconds, raw words read over all epochs, effective words trained on after downsampling).
    Epochs: :meth:`CadeSettings.epochs` of all slices' tokens, at least ``compass_epochs``.
    """
    corpus = _ConcatenatedSlices(slices)
    epochs = compass_epochs(model, settings)
    callbacks = [_EpochProgress(progress, model.corpus_total_words, epochs)] if progress else []
    start = time.perf_counter()
    effective, raw = model.train(corpus, total_examples=model.corpus_count, epochs=epochs, callbacks=callbacks)
    return time.perf_counter() - start, int(raw), int(effective)


def compass_epochs(model: Word2Vec, settings: CadeSettings) -> int:
    """The compass's epochs: scaled to the words of all slices (``model.corpus_total_words``)."""
    return settings.epochs(int(model.corpus_total_words), settings.compass_epochs)
