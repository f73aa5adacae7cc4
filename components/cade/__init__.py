"""CADE: Compass-aligned Distributional Embeddings (Bianchi, Di Carlo, Nicoli, Palmonari 2020; TWEC,
AAAI 2019) on stock gensim 4, with the compass's context matrix truly frozen during slice training.

Usage::

    import pandas as pd
    from components.cade import (CadeSettings, align, sentences_from_texts, save_alignment,
                                 load_alignment, vocabulary_overlap, overlap_warnings, most_shifted,
                                 neighbours, plot_overlap, plot_neighbours)
    frame = pd.read_parquet("corpora.parquet")                     # columns: corpus, text
    slices = {name: sentences_from_texts(group["text"]) for name, group in frame.groupby("corpus", sort=False)}
    alignment = align(slices, CadeSettings(workers=2))
    most_shifted(alignment, "news", "encyclopedia", top=20)        # words used most differently
    neighbours(alignment, "court", slices=["news", "encyclopedia"])
    save_alignment(alignment, "out/cade")                          # gensim KeyedVectors + cade.json
    alignment = load_alignment("out/cade")

Modules: ``settings`` (CadeSettings), ``text`` (tokens, held-out split), ``compass`` (the compass
Word2Vec), ``slices`` (frozen-context slice training on gensim's Doc2Vec kernels), ``alignment``
(``align`` and the ``Alignment`` result), ``files`` (save/load), ``analysis`` (overlap, shift tables,
neighbours), ``likelihood`` (held-out log-likelihood), ``plots`` (PNG). Every bad-input error is a
:class:`CadeError` naming the slice and/or word.
"""

from components.cade.alignment import Alignment, align
from components.cade.analysis import (
    DEFAULT_MIN_COUNT,
    LOW_OVERLAP,
    cross_similarity,
    most_shifted,
    neighbours,
    overlap_warnings,
    shift_table,
    vocabulary_overlap,
)
from components.cade.errors import CadeError
from components.cade.files import load_alignment, save_alignment
from components.cade.likelihood import Likelihood, evaluate, log_likelihood
from components.cade.plots import plot_neighbours, plot_overlap
from components.cade.settings import CadeSettings
from components.cade.slices import SliceStats
from components.cade.text import sentences_from_texts, split_heldout

__all__ = [
    "DEFAULT_MIN_COUNT",
    "LOW_OVERLAP",
    "Alignment",
    "CadeError",
    "CadeSettings",
    "Likelihood",
    "SliceStats",
    "align",
    "cross_similarity",
    "evaluate",
    "load_alignment",
    "log_likelihood",
    "most_shifted",
    "neighbours",
    "overlap_warnings",
    "plot_neighbours",
    "plot_overlap",
    "save_alignment",
    "sentences_from_texts",
    "shift_table",
    "split_heldout",
    "vocabulary_overlap",
]
