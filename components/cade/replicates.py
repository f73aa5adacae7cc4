"""Split-half replicates: each slice's texts cut into two random halves, both trained against the frozen
compass context, so a word's noise *within* a slice can be measured beside its shift *across* slices.

A replicate ``r`` of slice ``s`` is a pair of KeyedVectors (half 1, half 2), trained exactly like a slice
(:func:`components.cade.slices.train_vectors`, the same frozen context, epochs scaled to the half's size)
on a seeded random half of the slice's units (its texts), the other half being the rest. Two halves of
one slice show how far a word's vector moves when only the sample of text changes; the split_half shift
measure (components.cade.shift) compares that with how far it moves between slices. Splitting by whole
texts keeps what one text says together, as a document bootstrap does.

Null replicates: ``settings.null_replicates`` times the slice is cut into four random quarters instead,
each trained the same way. Two quarters against the other two are a *pseudo pair* of one slice: what
the split_half measure gives when nothing changed, on half the text (components.cade.shift uses them
as the significance null).

Usage::

    from components.cade.replicates import split_halves, train_replicates
    first, second = split_halves(sentences, seed=0, name="news", replicate=0)
    pairs = train_replicates(compass, context, "news", sentences, settings)   # settings.replicates pairs
    half1, half2 = pairs[0]
    half1.get_vecattr("market", "count")        # its count in that half
    quarters = train_replicates(compass, context, "news", sentences, settings, parts=4,
                                count=settings.null_replicates)

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


def split_parts(sentences: Sequence[list[str]], seed: int, name: str, replicate: int, parts: int
                ) -> list[list[list[str]]]:
    """``parts`` disjoint random parts of ``sentences`` of (nearly) equal numbers of units, drawn by a
    seeded permutation and kept in their original order. The same arguments give the same parts."""
    n = len(sentences)
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8")), replicate, parts])
    part = np.empty(n, dtype=np.int64)
    part[np.random.default_rng(state).permutation(n)] = np.arange(n) * parts // max(n, 1)
    return [[s for s, p in zip(sentences, part) if p == k] for k in range(parts)]


def split_halves(
    sentences: Sequence[list[str]], seed: int, name: str, replicate: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Two disjoint halves of ``sentences`` (sizes differing by at most one unit), drawn by a seeded
    permutation of the units and kept in their original order. The same (seed, name, replicate) gives
    the same split."""
    first, second = split_parts(sentences, seed, name, replicate, 2)
    return first, second


def half_name(name: str, replicate: int, half: int, parts: int = 2) -> str:
    """The name a part trains under (it seeds the part's random start, see slices.slice_seed)."""
    return f"{name}#r{replicate}h{half}" if parts == 2 else f"{name}#r{replicate}p{half}of{parts}"


def train_replicates(
    compass: Word2Vec,
    context: np.ndarray,
    name: str,
    sentences: Sequence[list[str]],
    settings: CadeSettings,
    progress: Progress | None = None,
    parts: int = 2,
    count: int | None = None,
) -> list[tuple[KeyedVectors, ...]]:
    """``count`` (default ``settings.replicates``) replicates of slice ``name``, each a tuple of ``parts``
    KeyedVectors (halves by default; quarters for the significance null, ``settings.null_replicates``);
    none when the slice has fewer units than parts or a part would hold no compass word (a slice of one
    text cannot be split). ``progress`` hears of all parts as one job, ``"<name> halves"`` (or
    ``"<name> quarters"``), in thousandths of a part."""
    vocab = compass.wv.key_to_index
    count = settings.replicates if count is None else count
    if len(sentences) < parts or count == 0:
        return []
    label = {2: "halves", 4: "quarters"}.get(parts, f"{parts} parts")
    epochs = settings.epochs(sum(len(s) for s in sentences), settings.slice_epochs)  # the whole slice's
    out = []
    for r in range(count):
        pieces = split_parts(sentences, settings.seed, name, r, parts)
        if not all(any(w in vocab for s in piece for w in s) for piece in pieces):
            return []
        trained = []
        for h, piece in enumerate(pieces, start=1):
            report = None
            if progress is not None:
                done_before, total = 1000 * (parts * r + h - 1), 1000 * parts * count

                def report(_name, done, of, before=done_before, total=total):
                    progress(f"{name} {label}", before + 1000 * done // max(of, 1), total)
            vectors, counts, _ = train_vectors(compass, context, half_name(name, r, h, parts), piece, settings,
                                               progress=report, epochs=epochs)
            trained.append(slice_vectors(compass, vectors, counts))
        out.append(tuple(trained))
    return out
