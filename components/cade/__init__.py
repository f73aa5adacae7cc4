"""CADE: Compass-aligned Distributional Embeddings (Bianchi, Di Carlo, Nicoli, Palmonari 2020,
"Compass-aligned Distributional Embeddings for Studying Semantic Differences across Corpora", arXiv
2004.06519; first as TWEC: Di Carlo, Bianchi, Palmonari 2019, "Training Temporal Word Embeddings with a
Compass", AAAI) on stock gensim 4, with the compass's context matrix truly frozen during slice training.
docs/cade.md: the method, the shift measure and its significance, the self-check, the benchmark.

Usage::

    import pandas as pd
    from components.cade import (CadeSettings, align, sentences_from_texts, save_alignment,
                                 load_alignment, vocabulary_overlap, overlap_warnings, most_shifted,
                                 neighbours, plot_overlap, plot_neighbours)
    frame = pd.read_parquet("corpora.parquet")                     # columns: corpus, text
    slices = {name: sentences_from_texts(group["text"]) for name, group in frame.groupby("corpus", sort=False)}
    alignment = align(slices, CadeSettings(workers=2))
    most_shifted(alignment, "news", "encyclopedia", top=20)        # words used most differently, with z and q
    neighbours(alignment, "court", slices=["news", "encyclopedia"])
    save_alignment(alignment, "out/cade")                          # gensim KeyedVectors + cade.json
    alignment = load_alignment("out/cade")

Modules: ``settings`` (CadeSettings, defaults from semflow/config/cade.py), ``text`` (tokens, held-out
split), ``compass`` (the compass Word2Vec), ``slices`` (frozen-context slice training on gensim's Doc2Vec
kernels), ``replicates`` (split-half replicates of each slice), ``alignment`` (``align`` and the
``Alignment`` result), ``files`` (save/load), ``shift`` (shift measures and their significance),
``analysis`` (overlap, shift tables, neighbours), ``selfcheck`` (planted swaps: the benchmark's shifts
and the self-check), ``likelihood`` (held-out log-likelihood), ``plots`` (PNG), ``report`` (the stage's
analysis). Every bad-input error is a :class:`CadeError` naming the slice and/or word.
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
from components.cade.selfcheck import SelfCheck, matched_pairs, self_check, swap_words
from components.cade.settings import CadeSettings
from components.cade.shift import MEASURES, shift_scores
from components.cade.slices import SliceStats
from components.cade.text import sentences_from_texts, split_heldout

__all__ = [
    "DEFAULT_MIN_COUNT",
    "LOW_OVERLAP",
    "MEASURES",
    "Alignment",
    "CadeError",
    "CadeSettings",
    "Likelihood",
    "SelfCheck",
    "SliceStats",
    "align",
    "cross_similarity",
    "evaluate",
    "load_alignment",
    "log_likelihood",
    "matched_pairs",
    "most_shifted",
    "neighbours",
    "overlap_warnings",
    "plot_neighbours",
    "plot_overlap",
    "save_alignment",
    "self_check",
    "sentences_from_texts",
    "shift_scores",
    "shift_table",
    "split_heldout",
    "swap_words",
    "vocabulary_overlap",
]
