"""Align slices with CADE: train the compass, then every slice against its frozen context matrix.

Usage::

    from components.cade import CadeSettings, align, sentences_from_texts
    slices = {
        "news": sentences_from_texts(news_texts),
        "encyclopedia": sentences_from_texts(wiki_texts),
    }
    alignment = align(slices, CadeSettings(), progress=lambda name, done, total: print(name, done, total))
    alignment.slices["news"]["market"]            # the word's vector in the news slice
    alignment.count("news", "market")             # how often it occurs there
    alignment.stats["news"].words_per_second
    alignment.replicates["news"][0]              # (half 1, half 2) KeyedVectors of split-half replicate 0

Vectors of different slices live in one space (the compass's), so a cosine between a word's vectors in
two slices measures how differently the slices use it (Bianchi et al. 2020, arXiv 2004.06519).
Two deviations from CADE, measured together beside CADE's own choices (bench/results/cade.md):
epochs scaled to the text's size (``epoch_words``; 0 = CADE's fixed epochs) and split-half replicates of
every slice (``replicates``; 0 = none) and quarter replicates (``null_replicates``), which the split_half
shift measure and its significance need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from gensim.models import KeyedVectors, Word2Vec

from components.cade.compass import COMPASS, Progress, build_compass_vocab, compass_epochs, train_compass
from components.cade.errors import CadeError
from components.cade.replicates import train_replicates
from components.cade.settings import CadeSettings
from components.cade.slices import SliceStats, frozen_context, train_slice
from components.cade.text import cut_long


@dataclass
class Alignment:
    """Compass and aligned slice embeddings.

    - ``compass``: the compass word vectors; ``count`` attribute = the word's count over all slices.
    - ``context``: the compass's ``syn1neg`` [len(compass), vector_size], rows in compass order; every
      slice was trained against exactly this matrix (needed for held-out likelihood).
    - ``slices``: name -> KeyedVectors holding only that slice's vocabulary (compass words that occur in
      the slice), ``count`` attribute = the word's count in the slice. Order = the caller's order.
    - ``stats``: ``"compass"`` and each slice name -> :class:`SliceStats` (words, seconds, words/s).
    - ``tokens``: each slice's token count, words outside the compass vocabulary included.
    - ``replicates``: name -> split-half replicates [(half 1, half 2) KeyedVectors], as ``slices``.
    - ``null_replicates``: name -> quarter replicates [(q1, q2, q3, q4) KeyedVectors] (the significance null).
    - ``texts``: name -> the token lists the slice was trained on (one per text, after long texts were
      cut), which the ``context`` shift measure reads (components.cade.contexts).
    - ``model``: the trained compass Word2Vec (vocabulary, noise table, context) while in memory, so more
      slices can be trained against it (the self-check); None after :func:`load_alignment`.
    """

    settings: CadeSettings
    compass: KeyedVectors
    context: np.ndarray
    slices: dict[str, KeyedVectors]
    stats: dict[str, SliceStats] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    replicates: dict[str, list[tuple[KeyedVectors, ...]]] = field(default_factory=dict)
    null_replicates: dict[str, list[tuple[KeyedVectors, ...]]] = field(default_factory=dict)
    texts: dict[str, list[list[str]]] = field(default_factory=dict, repr=False)
    model: Word2Vec | None = field(default=None, repr=False, compare=False)

    @property
    def names(self) -> list[str]:
        return list(self.slices)

    def vectors(self, name: str) -> KeyedVectors:
        """The slice's KeyedVectors; CadeError naming the known slices if ``name`` is not one."""
        if name not in self.slices:
            raise CadeError(f"unknown slice {name!r}; slices: {', '.join(self.slices)}")
        return self.slices[name]

    def count(self, name: str, word: str) -> int:
        """How often ``word`` occurs in slice ``name`` (0 if not at all, or not in the compass)."""
        kv = self.vectors(name)
        return int(kv.get_vecattr(word, "count")) if word in kv.key_to_index else 0

    def word_counts(self, name: str) -> dict[str, int]:
        kv = self.vectors(name)
        return dict(zip(kv.index_to_key, kv.expandos["count"].tolist()))

    def require(self, name: str, word: str) -> int:
        """The word's index in slice ``name``; CadeError naming word and slice if it is absent."""
        kv = self.vectors(name)
        index = kv.key_to_index.get(word)
        if index is None:
            if word not in self.compass.key_to_index:
                raise CadeError(
                    f"word {word!r} is not in slice {name!r}: it is not in the compass vocabulary "
                    f"(fewer than min_count={self.settings.min_count} occurrences over all slices)"
                )
            raise CadeError(f"word {word!r} is not in slice {name!r} (it occurs in other slices only)")
        return index

    def noise_distribution(self) -> np.ndarray:
        """Negative-sampling distribution over compass rows: count ** ns_exponent, normalised."""
        weights = self.compass.expandos["count"].astype(np.float64) ** self.settings.ns_exponent
        return weights / weights.sum()


def align(
    slices: Mapping[str, Sequence[list[str]]],
    settings: CadeSettings | None = None,
    progress: Progress | None = None,
) -> Alignment:
    """Train the compass on all slices, then each slice with the compass's context matrix frozen.

    ``slices`` maps a name to its token lists (see :func:`components.cade.text.sentences_from_texts`).
    ``progress(name, done, total)`` is called from this thread with words done/total, first for
    ``"compass"``, then for each slice, then for its halves and quarters (``"<slice> halves"``). Bad input
    raises CadeError before any training: fewer than 2 slices, an empty slice, a slice without any
    compass word.
    """
    settings = settings or CadeSettings()
    if not isinstance(slices, Mapping):
        raise CadeError(f"slices must map a slice name to its token lists, got {type(slices).__name__}")
    # Both gensim's Word2Vec (the compass) and the Doc2Vec kernels (the slices) silently drop words past
    # the 10,000th of a unit; cutting long units first keeps every word and both sides consistent.
    slices = {name: cut_long(sentences) for name, sentences in slices.items()}
    model = build_compass_vocab(slices, settings)
    seconds, raw, effective = train_compass(model, slices, settings, progress)
    stats = {COMPASS: SliceStats(raw_words=raw, effective_words=effective, seconds=seconds,
                                 epochs=compass_epochs(model, settings))}
    context = frozen_context(model)
    trained: dict[str, KeyedVectors] = {}
    for name, sentences in slices.items():
        trained[name], stats[name] = train_slice(model, context, name, sentences, settings, progress)
    replicates = {name: train_replicates(model, context, name, sentences, settings, progress)
                  for name, sentences in slices.items()}
    null_replicates = {name: train_replicates(model, context, name, sentences, settings, progress, parts=4,
                                              count=settings.null_replicates) for name, sentences in slices.items()}
    tokens = {name: int(sum(len(s) for s in sentences)) for name, sentences in slices.items()}
    return Alignment(settings=settings, compass=model.wv, context=context, slices=trained, stats=stats, tokens=tokens,
                     replicates=replicates, null_replicates=null_replicates,
                     texts={name: [list(s) for s in sentences] for name, sentences in slices.items()}, model=model)
