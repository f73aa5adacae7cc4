"""Corpus preparation for CADE: texts to token lists, and a deterministic held-out split.

Usage::

    from components.cade.text import sentences_from_texts, split_heldout
    sentences_from_texts(["The cat sat. A dog ran home!"])
    # [['the', 'cat', 'sat', 'dog', 'ran', 'home']]
    sentences_from_texts(["The cat sat. A dog ran home!"], split=True)
    # [['the', 'cat', 'sat'], ['dog', 'ran', 'home']]
    train, heldout = split_heldout(sentences, fraction=0.1, seed=0)

From a corpus table with columns ``corpus, text`` (components.data's ``corpora.parquet``)::

    slices = {name: sentences_from_texts(group["text"]) for name, group in frame.groupby("corpus", sort=False)}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from gensim.utils import simple_preprocess

from components.cade.errors import CadeError
from components.data.text import split_sentences

# gensim's compiled kernels read at most this many words of one sentence (Word2Vec's
# MAX_WORDS_IN_BATCH, doc2vec_inner's MAX_DOCUMENT_LEN) and silently drop the rest: cut longer runs.
MAX_SENTENCE_WORDS = 10000


def tokenize(sentence: str) -> list[str]:
    """gensim's ``simple_preprocess``: lowercase alphabetic tokens of 2-15 characters, no accents removed.

    Numbers, punctuation and one-letter words are dropped; deterministic and language-agnostic enough
    for the Latin-script corpora the pipeline ships.
    """
    return simple_preprocess(sentence, deacc=False, min_len=2, max_len=15)


def sentences_from_texts(texts: Iterable[str], split: bool = False) -> list[list[str]]:
    """Token lists (gensim's "sentences", the units a context window stays inside): one per text, or
    with ``split=True`` one per sentence of each text.

    One unit per text is the default: context windows then cross sentence boundaries inside a text, as
    when gensim trains on whole documents, and training runs faster, because the compiled kernels are
    called once per unit and short units spend relatively more time in Python (bench/bench_cade.py
    measures both). With ``split=True`` sentences come from ``components.data.text.split_sentences``
    (``.!?`` followed by a capital letter), like CADE's one-sentence-per-line input. Texts that are
    missing (None/NaN) or have no token are skipped; a unit longer than ``MAX_SENTENCE_WORDS`` tokens is
    cut into pieces of that length.
    """
    out: list[list[str]] = []
    for text in texts:
        if not isinstance(text, str):
            continue  # pandas gives NaN for a missing text
        for part in split_sentences(text) if split else [text]:
            tokens = tokenize(part)
            for start in range(0, len(tokens), MAX_SENTENCE_WORDS):
                out.append(tokens[start : start + MAX_SENTENCE_WORDS])
    return out


def cut_long(sentences: Sequence[list[str]]) -> Sequence[list[str]]:
    """``sentences`` with every unit longer than MAX_SENTENCE_WORDS cut into pieces of that length
    (the same object back when none is that long, so the common case copies nothing)."""
    if all(len(s) <= MAX_SENTENCE_WORDS for s in sentences):
        return sentences
    return [s[i : i + MAX_SENTENCE_WORDS] for s in sentences for i in range(0, max(len(s), 1), MAX_SENTENCE_WORDS)]


def split_heldout(
    sentences: Sequence[list[str]], fraction: float, seed: int = 0
) -> tuple[list[list[str]], list[list[str]]]:
    """(train, heldout): ``round(fraction * n)`` sentences (at least 1) drawn by a seeded permutation.

    Both parts keep the original sentence order; the same input, fraction and seed always give the same
    split. Raises CadeError if either part would be empty.
    """
    if not 0 < fraction < 1:
        raise CadeError(f"held-out fraction must be in (0, 1), got {fraction}")
    n = len(sentences)
    n_heldout = max(1, round(fraction * n))
    if n_heldout >= n:
        raise CadeError(f"cannot hold out {fraction:.0%} of {n} sentence(s) and keep any for training")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[:n_heldout]] = True
    train = [s for s, c in zip(sentences, chosen) if not c]
    heldout = [s for s, c in zip(sentences, chosen) if c]
    return list(train), list(heldout)
