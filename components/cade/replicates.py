"""Split-half replicates: each slice's texts cut into two random halves, both trained against the frozen
compass context, so a word's noise *within* a slice can be measured beside its shift *across* slices.

A replicate ``r`` of slice ``s`` is a pair of KeyedVectors (half 1, half 2), trained exactly like a slice
(:func:`components.cade.slices.train_vectors`, the same frozen context, epochs scaled to the half's size)
on a seeded random half of the slice's units (its texts), the other half being the rest. Two halves of
one slice show how far a word's vector moves when only the sample of text changes; the split_half shift
measure (components.cade.shift) compares that with how far it moves between slices. Splitting by whole
texts keeps what one text says together, as a document bootstrap does.

Usage::

    from components.cade.replicates import split_halves, train_replicates
    first, second = split_halves(sentences, seed=0, name="news", replicate=0)
    pairs = train_replicates(compass, context, "news", sentences, settings)   # settings.replicates pairs
    half1, half2 = pairs[0]
    half1.get_vecattr("market", "count")        # its count in that half

Each half trains for as many epochs as its whole slice does (:meth:`CadeSettings.epochs` of the
slice's tokens, not of the half's): a half is then trained the way its slice is, on half the text, and
one replicate costs about one more training of the slice.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from gensim.models import KeyedVectors, Word2Vec

from components.cade.settings import CadeSettings
from components.cade.slices import Progress, slice_vectors, train_vectors


def split_halves(
    sentences: Sequence[list[str]], seed: int, name: str, replicate: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Two disjoint halves of ``sentences`` (floor(n/2) and the rest), drawn by a seeded permutation of
    the units and kept in their original order. The same (seed, name, replicate) gives the same split."""
    n = len(sentences)
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8")), replicate])
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(state).permutation(n)[: n // 2]] = True
    first = [s for s, c in zip(sentences, chosen) if c]
    second = [s for s, c in zip(sentences, chosen) if not c]
    return first, second


def half_name(name: str, replicate: int, half: int) -> str:
    """The name a half trains under (it seeds the half's random start, see slices.slice_seed)."""
    return f"{name}#r{replicate}h{half}"


def train_replicates(
    compass: Word2Vec,
    context: np.ndarray,
    name: str,
    sentences: Sequence[list[str]],
    settings: CadeSettings,
    progress: Progress | None = None,
) -> list[tuple[KeyedVectors, KeyedVectors]]:
    """``settings.replicates`` (half 1, half 2) pairs of slice ``name``; none when it has < 2 units or
    a half would hold no compass word (a slice of one text cannot be split). ``progress`` hears of all
    halves as one job, ``"<name> halves"``, in thousandths of a half."""
    vocab = compass.wv.key_to_index
    if len(sentences) < 2 or settings.replicates == 0:
        return []
    out = []
    epochs = settings.epochs(sum(len(s) for s in sentences), settings.slice_epochs)  # the whole slice's
    for r in range(settings.replicates):
        halves = split_halves(sentences, settings.seed, name, r)
        if not all(any(w in vocab for s in half for w in s) for half in halves):
            return []
        trained = []
        for h, half in enumerate(halves, start=1):
            report = None
            if progress is not None:
                done_before, total = 1000 * (2 * r + h - 1), 1000 * 2 * settings.replicates

                def report(_name, done, of, before=done_before, total=total):
                    progress(f"{name} halves", before + 1000 * done // max(of, 1), total)
            vectors, counts, _ = train_vectors(compass, context, half_name(name, r, h), half, settings,
                                               progress=report, epochs=epochs)
            trained.append(slice_vectors(compass, vectors, counts))
        out.append((trained[0], trained[1]))
    return out
