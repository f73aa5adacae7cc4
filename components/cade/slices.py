"""Slice training with a truly frozen context matrix, on stock gensim 4.

Each slice model starts from its own word vectors (random, or the compass's) and the compass's context
matrix ``syn1neg``; only the word vectors train. Stock ``Word2Vec.train`` always updates ``syn1neg``
(``vectors_lockf`` scales only word-vector updates), so this module drives gensim's Doc2Vec kernels
instead, which take ``learn_hidden=False``:

- CBOW: ``doc2vec_inner.train_document_dm`` with no doctags. Its input is the mean of the window's word
  vectors (``cbow_mean=1``; with zero doctags nothing else enters the mean), the negative-sampling
  update of the output rows is skipped (``learn_hidden=False``) and the error is added to every context
  word vector unscaled, exactly as Word2Vec's CBOW-mean kernel does.
- Skip-gram: ``doc2vec_inner.train_document_dbow`` with ``train_words=True`` and no doctags, which is
  Word2Vec's skip-gram negative-sampling loop (gensim's own docstring says so) with the same switch.

Both kernels read the model only through a few attributes, so a small stand-in object passes the
compass's vocabulary indices, downsampling thresholds (``sample_int``), negative-sampling table
(``cum_table``) and the frozen ``syn1neg``: rows line up with the compass by construction. We do what
``Word2Vec.train`` otherwise does: linear learning-rate decay from alpha to min_alpha over all slice
words and epochs (updated per job, as gensim does), and threading: jobs of ~``batch_words`` words run on
a thread pool; the kernels release the GIL while they compute.

Usage::

    from components.cade.slices import frozen_context, train_slice
    context = frozen_context(compass)                   # read-only copy of compass.syn1neg
    vectors, stats = train_slice(compass, context, "news", news_sentences, settings)
    vectors.get_vecattr("market", "count")               # the word's count in this slice
    stats.words_per_second
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass

import numpy as np
from gensim.models import KeyedVectors, Word2Vec
from gensim.models.doc2vec_inner import train_document_dbow, train_document_dm

from components.cade.errors import CadeError
from components.cade.settings import CadeSettings

REAL = np.float32
Progress = Callable[[str, int, int], None]


@dataclass
class SliceStats:
    """What one model's training did. ``raw_words`` counts every token read over all epochs, including
    words outside the compass vocabulary (as gensim's Word2Vec reports it), so words/s compare."""

    raw_words: int
    effective_words: int  # tokens trained on after downsampling
    seconds: float
    epochs: int = 0  # passes over the text (0: not recorded, alignments saved before epoch scaling)

    @property
    def words_per_second(self) -> float:
        return self.raw_words / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "words_per_second": self.words_per_second}


def frozen_context(compass: Word2Vec) -> np.ndarray:
    """A read-only copy of the compass's ``syn1neg``, shared by every slice (the kernels never write it
    with ``learn_hidden=False``; read-only also stops numpy code from changing it by accident)."""
    context = np.array(compass.syn1neg, dtype=REAL, copy=True, order="C")
    context.flags.writeable = False
    return context


def slice_seed(seed: int, name: str) -> int:
    """Seed of a slice's random initialisation: settings.seed and the slice's name.

    Slices must not share a starting point: a rare word barely moves in a few epochs, and identical
    starts would make it look aligned across slices when nothing aligned it.
    """
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8"))]).generate_state(1)[0])


# --------------------------------------------------------------------------- stand-ins for the kernels
class _Vocab:
    """What the kernels read of ``model.wv``: word -> index, per-word ``sample_int``, ``'\\0' in wv``."""

    __slots__ = ("key_to_index", "expandos")

    def __init__(self, key_to_index: dict[str, int], sample_int: np.ndarray):
        self.key_to_index = key_to_index
        self.expandos = {"sample_int": sample_int}

    def __contains__(self, key) -> bool:
        return key in self.key_to_index


class _Tags:
    __slots__ = ("vector_size",)

    def __init__(self, vector_size: int):
        self.vector_size = vector_size


class _JobRandom:
    """The kernels' ``model.random``: two ``randint(0, 2**24)`` draws per call seed its C generator,
    and ``randint(0, window, n)`` gives the reduced windows. numpy's scalar randint costs ~2 us and
    holds the GIL on every sentence; these come from a per-job stream instead (same distributions)."""

    __slots__ = ("_bits", "_windows", "_pos", "_window", "_rng")

    def __init__(self, seed: int, window: int, words: int):
        self._rng = np.random.default_rng(seed)
        self._bits = random.Random(seed).getrandbits
        self._window = window
        self._windows = self._rng.integers(0, window, max(words, 1)).tolist()
        self._pos = 0

    def randint(self, low, high, size=None):
        if size is None and low == 0 and high == 1 << 24:
            return self._bits(24)
        if size is not None and low == 0 and high == self._window and self._pos + size <= len(self._windows):
            start, self._pos = self._pos, self._pos + size
            return self._windows[start : self._pos]
        return self._rng.integers(low, high, size)


class _KernelModel:
    """Duck-typed Doc2Vec for ``init_d2v_config``: negative sampling only, no doctags, CBOW mean."""

    hs = 0
    dm_tag_count = 0
    cbow_mean = 1
    shrink_windows = True
    workers = 1

    def __init__(self, shared: "_Shared", rng: _JobRandom):
        self.negative = shared.negative
        self.sample = shared.sample
        self.window = shared.window
        self.layer1_size = shared.layer1_size
        self.wv = shared.wv
        self.dv = shared.dv
        self.syn1neg = shared.syn1neg
        self.cum_table = shared.cum_table
        self.random = rng


@dataclass
class _Shared:
    negative: int
    sample: float
    window: int
    layer1_size: int
    wv: _Vocab
    dv: _Tags
    syn1neg: np.ndarray
    cum_table: np.ndarray


# ------------------------------------------------------------------------------------------ training
def _jobs(sentences: Sequence[list[str]], batch_words: int) -> list[tuple[int, int, int]]:
    """(start, end, words) ranges of consecutive sentences holding at most batch_words words each."""
    jobs, start, words = [], 0, 0
    for i, sentence in enumerate(sentences):
        if words and words + len(sentence) > batch_words:
            jobs.append((start, i, words))
            start, words = i, 0
        words += len(sentence)
    if words:
        jobs.append((start, len(sentences), words))
    return jobs


def _initial_vectors(compass: Word2Vec, name: str, settings: CadeSettings) -> np.ndarray:
    if settings.init == "compass":
        return np.array(compass.wv.vectors, dtype=REAL, copy=True, order="C")
    # Word2Vec's own range, uniform in [-0.5, 0.5) / vector_size.
    rng = np.random.default_rng(slice_seed(settings.seed, name))
    shape = (len(compass.wv), settings.vector_size)
    return ((rng.random(shape, dtype=REAL) - REAL(0.5)) / REAL(settings.vector_size)).astype(REAL)


def train_vectors(
    compass: Word2Vec,
    context: np.ndarray,
    name: str,
    sentences: Sequence[list[str]],
    settings: CadeSettings,
    vectors: np.ndarray | None = None,
    progress: Progress | None = None,
    epochs: int | None = None,
) -> tuple[np.ndarray, Counter, SliceStats]:
    """Train word vectors for every compass index on ``sentences`` against the frozen ``context``.

    Returns (vectors of shape [len(compass vocab), vector_size], the slice's counts of compass words,
    stats). ``vectors`` gives the starting point (default: by ``settings.init``); it is trained in place.
    ``epochs`` defaults to ``settings.epochs(tokens, settings.slice_epochs)``: at least slice_epochs,
    more for a small slice when ``settings.epoch_words`` asks for it. Words outside the compass
    vocabulary are dropped once up front (the kernels would skip them anyway).
    """
    vocab = compass.wv.key_to_index
    raw = sum(len(s) for s in sentences)
    epochs = settings.epochs(raw, settings.slice_epochs) if epochs is None else epochs
    kept = [tokens for s in sentences if (tokens := [w for w in s if w in vocab])]
    counts = Counter(w for s in kept for w in s)
    if not counts:
        raise CadeError(
            f"slice {name!r} has no word in the compass vocabulary (compass min_count={settings.min_count})"
        )
    if vectors is None:
        vectors = _initial_vectors(compass, name, settings)
    shape = (len(vocab), settings.vector_size)
    # The kernels read raw pointers: a wrong dtype, shape or stride would be silently misread.
    for label, array in (("starting vectors", vectors), ("context matrix", context)):
        if array.shape != shape or array.dtype != REAL or not array.flags.c_contiguous:
            raise CadeError(f"slice {name!r}: the {label} must be C-contiguous float32 of shape {shape} "
                            f"(the compass vocabulary), got {array.dtype} {array.shape}")

    shared = _Shared(
        negative=settings.negative, sample=settings.sample, window=settings.window,
        layer1_size=settings.vector_size, wv=_Vocab(vocab, compass.wv.expandos["sample_int"]),
        dv=_Tags(settings.vector_size), syn1neg=context, cum_table=compass.cum_table,
    )
    # The kernels index words_lockf with the doctag lock length (doc2vec_inner's CBOW loop): with a
    # length-1 doctag lock every word update reads words_lockf[0], so both are length-1 arrays of 1.0.
    lockf = np.ones(1, dtype=REAL)
    no_tags = np.zeros((1, settings.vector_size), dtype=REAL)
    local = threading.local()
    sg = settings.sg == 1
    jobs = _jobs(kept, settings.batch_words)
    epoch_words = sum(words for *_, words in jobs)
    total = epoch_words * epochs
    seed = slice_seed(settings.seed, name)

    def run(start: int, end: int, words: int, alpha: float, job_seed: int) -> int:
        if not hasattr(local, "work"):
            local.work = np.zeros(settings.vector_size, dtype=REAL)
            local.neu1 = np.zeros(settings.vector_size, dtype=REAL)
        model = _KernelModel(shared, _JobRandom(job_seed, settings.window, words))
        work, neu1, done = local.work, local.neu1, 0
        if sg:
            for sentence in kept[start:end]:
                done += train_document_dbow(
                    model, sentence, (), alpha, work, True, False, True, False,
                    vectors, lockf, no_tags, lockf,
                )
        else:
            for sentence in kept[start:end]:
                done += train_document_dm(
                    model, sentence, (), alpha, work, neu1, False, True, False,
                    vectors, lockf, no_tags, lockf,
                )
        return done

    tasks, position = [], 0
    for epoch in range(epochs):
        for index, (start, end, words) in enumerate(jobs):
            # Linear decay over the whole run, evaluated at the job's start, as Word2Vec does per job.
            alpha = settings.alpha - (settings.alpha - settings.min_alpha) * position / total
            job_seed = int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])
            tasks.append((start, end, words, max(alpha, settings.min_alpha), job_seed))
            position += words

    effective, done_words = 0, 0
    began = time.perf_counter()
    if settings.workers == 1:
        for task in tasks:
            effective += run(*task)
            done_words += task[2]
            if progress:
                progress(name, done_words, total)
    else:
        with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix=f"cade-{name}") as pool:
            futures = {pool.submit(run, *task): task[2] for task in tasks}
            for future in as_completed(futures):
                effective += future.result()
                done_words += futures[future]
                if progress:
                    progress(name, done_words, total)
    seconds = time.perf_counter() - began
    stats = SliceStats(raw_words=raw * epochs, effective_words=effective, seconds=seconds, epochs=epochs)
    return vectors, counts, stats


def slice_vectors(compass: Word2Vec, vectors: np.ndarray, counts: Counter) -> KeyedVectors:
    """KeyedVectors of the slice vocabulary (compass words seen in the slice, in compass order), with
    each word's slice count as the ``count`` attribute."""
    words = [w for w in compass.wv.index_to_key if counts.get(w)]
    rows = np.fromiter((compass.wv.key_to_index[w] for w in words), dtype=np.int64, count=len(words))
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=REAL)
    kv.add_vectors(words, vectors[rows])
    kv.allocate_vecattrs(attrs=["count"], types=[np.int64])
    kv.expandos["count"][:] = [counts[w] for w in words]
    return kv


def train_slice(
    compass: Word2Vec,
    context: np.ndarray,
    name: str,
    sentences: Sequence[list[str]],
    settings: CadeSettings,
    progress: Progress | None = None,
) -> tuple[KeyedVectors, SliceStats]:
    """One slice's aligned KeyedVectors (slice vocabulary only, with counts) and its training stats."""
    vectors, counts, stats = train_vectors(compass, context, name, sentences, settings, progress=progress)
    return slice_vectors(compass, vectors, counts), stats
