"""Tests for components.cade: frozen context, planted shifts with known answers, errors, save/load.

Synthetic corpora: topics are disjoint word sets; a sentence picks a topic and draws its words uniformly
from it. Two slices come from the same generator with different seeds, except that PLANTED words sit in
one topic in slice "one" and in another topic in slice "two". So the right answer is known: exactly
the planted words changed meaning, every other word kept it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from gensim.models import KeyedVectors, Word2Vec
from gensim.models.doc2vec_inner import train_document_dm

from components.cade import (
    LOW_OVERLAP,
    Alignment,
    CadeError,
    CadeSettings,
    align,
    cross_similarity,
    evaluate,
    load_alignment,
    log_likelihood,
    most_shifted,
    neighbours,
    overlap_warnings,
    plot_neighbours,
    plot_overlap,
    save_alignment,
    sentences_from_texts,
    shift_table,
    split_heldout,
    vocabulary_overlap,
)
from components.cade import slices as slices_module
from components.cade.compass import build_compass_vocab, train_compass
from components.cade import files as files_module
from components.cade.files import read_keyed_vectors
from components.cade.slices import frozen_context, slice_seed, train_vectors
from components.cade.text import cut_long

TOPICS, PER_TOPIC, LENGTH = 6, 25, 12
PLANTED = [f"p{i}" for i in range(8)]
TOPIC_WORDS = [[f"t{k}w{i}" for i in range(PER_TOPIC)] for k in range(TOPICS)]
# Each planted word moves to the topic three steps away: the two topics share no word.
HOME = {p: i % TOPICS for i, p in enumerate(PLANTED)}
AWAY = {p: (i + 3) % TOPICS for i, p in enumerate(PLANTED)}
# Counts in the shift tables: a topic word occurs ~240 times per slice, a planted word likewise; 20
# keeps every synthetic word and drops nothing real.
MIN_COUNT = 20


def make_slice(
    seed: int, placement: dict[str, int], sentences: int = 3000, base: list[list[str]] = TOPIC_WORDS
) -> list[list[str]]:
    """`sentences` sentences of LENGTH words; topic k holds base[k] plus the words placed in k."""
    topics = [list(words) for words in base]
    for word, topic in placement.items():
        topics[topic].append(word)
    rng = np.random.default_rng(seed)
    out = []
    for topic in rng.integers(TOPICS, size=sentences):
        words = topics[topic]
        out.append([words[i] for i in rng.integers(len(words), size=LENGTH)])
    return out


def small(sg: int = 0, **overrides) -> CadeSettings:
    # 32 dims and 10 fixed epochs, no split-half replicates unless asked: each alignment below trains in
    # 1-2 s on 2 cores (test_cade_shift.py covers the epoch scaling and the replicates).
    values = dict(sg=sg, vector_size=32, compass_epochs=10, slice_epochs=10, epoch_words=0, replicates=0,
                  null_replicates=0, workers=2, seed=0)
    return CadeSettings(**(values | overrides))


@pytest.fixture(scope="module")
def planted_slices():
    return {"one": make_slice(1, HOME), "two": make_slice(2, AWAY)}


@pytest.fixture(scope="module", params=[0, 1], ids=["cbow", "sg"])
def planted(request, planted_slices):
    return request.param, align(planted_slices, small(request.param, replicates=2, null_replicates=2))


def topic_members(topic: int, placement: dict[str, int]) -> set[str]:
    return set(TOPIC_WORDS[topic]) | {w for w, k in placement.items() if k == topic}


def precision_at_k(ranked_words: list[str]) -> float:
    k = len(PLANTED)
    return len(set(ranked_words[:k]) & set(PLANTED)) / k


# ------------------------------------------------------------------------------------------- freeze
@pytest.mark.parametrize("sg", [0, 1], ids=["cbow", "sg"])
def test_slice_training_leaves_context_bit_identical_and_trains_word_vectors(sg, planted_slices):
    settings = small(sg, slice_epochs=3)
    only_two = [[f"x{i}" for i in range(6)]] * 10  # compass words that slice "one" never has
    corpora = {"one": planted_slices["one"], "two": planted_slices["two"] + only_two}
    compass = build_compass_vocab(corpora, settings)
    train_compass(compass, corpora, settings)
    syn1neg = compass.syn1neg.copy()
    # A writable copy: the read-only flag of frozen_context() cannot stop C code, so the test must not
    # rely on it. What keeps it frozen is learn_hidden=False in the kernels.
    context = np.array(compass.syn1neg, copy=True)
    start = np.random.default_rng(0).uniform(-0.5, 0.5, context.shape).astype(np.float32) / 32
    vectors, counts, stats = train_vectors(
        compass, context, "one", planted_slices["one"], settings, vectors=start.copy()
    )

    assert np.array_equal(context, syn1neg)
    assert np.array_equal(compass.syn1neg, syn1neg)
    shared = frozen_context(compass)  # what align() hands every slice
    assert np.array_equal(shared, syn1neg) and not shared.flags.writeable
    rows = [compass.wv.key_to_index[w] for w in counts]
    moved = np.linalg.norm(vectors[rows] - start[rows], axis=1)
    assert moved.min() > 10 * np.linalg.norm(start[rows], axis=1).max()  # every slice word trained
    absent = [i for w, i in compass.wv.key_to_index.items() if w not in counts]
    assert len(absent) == 6 and np.array_equal(vectors[absent], start[absent])  # never touched
    assert stats.raw_words == 3 * sum(map(len, planted_slices["one"]))
    assert 0 < stats.effective_words < stats.raw_words  # downsampling on (sample=1e-3)


def test_the_freeze_check_would_catch_a_trained_context(planted_slices):
    """Same kernel call as the slices use, but learn_hidden=True: syn1neg changes, so the equality
    assertion above is a real check."""
    settings = small(0, slice_epochs=1)
    compass = build_compass_vocab(planted_slices, settings)
    train_compass(compass, planted_slices, settings)
    context = np.array(compass.syn1neg, copy=True)
    shared = slices_module._Shared(
        negative=settings.negative, sample=settings.sample, window=settings.window,
        layer1_size=settings.vector_size,
        wv=slices_module._Vocab(compass.wv.key_to_index, compass.wv.expandos["sample_int"]),
        dv=slices_module._Tags(settings.vector_size), syn1neg=context, cum_table=compass.cum_table,
    )
    model = slices_module._KernelModel(shared, slices_module._JobRandom(0, settings.window, 100))
    vectors = np.array(compass.wv.vectors, copy=True)
    one = np.ones(1, dtype=np.float32)
    work, neu1 = np.zeros(32, dtype=np.float32), np.zeros(32, dtype=np.float32)
    train_document_dm(model, planted_slices["one"][0], (), 0.025, work, neu1, False, True, True,
                      vectors, one, np.zeros((1, 32), dtype=np.float32), one)
    assert not np.array_equal(context, compass.syn1neg)


def test_random_init_differs_per_slice_and_is_deterministic():
    assert slice_seed(0, "one") == slice_seed(0, "one")
    assert len({slice_seed(0, "one"), slice_seed(0, "two"), slice_seed(1, "one")}) == 3


# ------------------------------------------------------------------------------------ planted shift
@pytest.mark.parametrize("measure", ["context", "split_half", "cosine"])
def test_cade_ranks_planted_words_most_shifted_and_keeps_stable_words(planted, measure):
    sg, alignment = planted
    table = shift_table(alignment, "one", "two", min_count=MIN_COUNT, topn=3, measure=measure)
    assert table.attrs["measure"] == measure
    assert len(table) == TOPICS * PER_TOPIC + len(PLANTED)  # every word passes the count filter
    assert precision_at_k(table["word"].tolist()) >= 0.9
    stable = table.loc[~table["word"].isin(PLANTED), "cosine"]
    # Measured over 8 corpus/training seeds: median 0.99 (CBOW) / 0.95-0.97 (SG), 5% quantile >= 0.90,
    # minimum >= 0.87, while planted words peak at 0.64.
    assert stable.median() > 0.9
    assert stable.quantile(0.05) > 0.8
    shifted = table.loc[table["word"].isin(PLANTED), "cosine"]
    assert shifted.max() < stable.min()
    # The neighbours tell why: a planted word sits among its home topic in one, its new topic in two.
    row = table.set_index("word").loc["p0"]
    assert set(row["neighbours_a"].split(", ")) <= topic_members(HOME["p0"], HOME)
    assert set(row["neighbours_b"].split(", ")) <= topic_members(AWAY["p0"], AWAY)


def test_independent_word2vec_models_fail_the_same_test(planted_slices):
    """Control: no compass. Two separately trained spaces are arbitrarily rotated against each other,
    so the cosine of a word across them says nothing and the planted words are not found."""
    settings = small(0)
    models = [
        Word2Vec(sentences, **settings.word2vec_kwargs(epochs=settings.slice_epochs) | {"seed": seed})
        for sentences, seed in ((planted_slices["one"], 11), (planted_slices["two"], 12))
    ]
    words = [w for w in models[0].wv.index_to_key if w in models[1].wv.key_to_index]
    cosine = np.array([models[0].wv.get_vector(w, norm=True) @ models[1].wv.get_vector(w, norm=True) for w in words])
    ranked = [words[i] for i in np.argsort(cosine, kind="stable")]
    assert precision_at_k(ranked) < 0.5
    stable = [c for w, c in zip(words, cosine) if w not in PLANTED]
    assert np.median(stable) < 0.5  # measured 0.01-0.24 over 4 corpus seeds (about 0.5 with equal seeds)


def test_identical_slices_give_near_identical_vectors(planted_slices):
    sentences = planted_slices["one"]
    alignment = align({"x": sentences, "y": [list(s) for s in sentences]}, small(0))
    x, y = alignment.slices["x"], alignment.slices["y"]
    assert not np.array_equal(x.vectors, y.vectors)  # separate random starts and training runs
    table = shift_table(alignment, "x", "y", min_count=MIN_COUNT, measure="cosine")
    assert table["cosine"].min() > 0.95  # measured 0.998


def test_single_worker_is_deterministic(planted_slices):
    subset = {name: sentences[:400] for name, sentences in planted_slices.items()}
    settings = small(0, workers=1, compass_epochs=2, slice_epochs=2)
    first, second = align(subset, settings), align(subset, settings)
    for name in subset:
        assert np.array_equal(first.slices[name].vectors, second.slices[name].vectors)
    other = align(subset, small(0, workers=1, compass_epochs=2, slice_epochs=2, seed=1))
    assert not np.array_equal(first.slices["one"].vectors, other.slices["one"].vectors)


def test_alignment_contents_counts_and_progress(planted_slices):
    calls = []
    subset = {name: sentences[:300] for name, sentences in planted_slices.items()}
    alignment = align(subset, small(1, compass_epochs=2, slice_epochs=2), progress=lambda *a: calls.append(a))
    assert alignment.names == ["one", "two"]
    assert set(alignment.slices["one"].index_to_key) <= set(alignment.compass.index_to_key)
    assert "p0" in alignment.slices["one"] and "p0" in alignment.slices["two"]
    expected = sum(s.count("t0w0") for s in subset["one"])
    assert alignment.count("one", "t0w0") == expected > 0
    assert alignment.count("one", "unknown") == 0
    assert alignment.tokens == {"one": 300 * LENGTH, "two": 300 * LENGTH}
    assert {n for n, *_ in calls} == {"compass", "one", "two"}
    for name in ("compass", "one", "two"):
        done, total = [(d, t) for n, d, t in calls if n == name][-1]
        assert done == total > 0
        assert alignment.stats[name].words_per_second > 0


def test_most_shifted_and_neighbours_and_cross_similarity(planted):
    _, alignment = planted
    top = most_shifted(alignment, "one", "two", top=5, min_count=MIN_COUNT, topn=4)
    assert len(top) == 5 and set(top["word"]) <= set(PLANTED)
    assert list(top.columns) == ["word", "shift", "z", "q", "cosine", "count_a", "count_b", "neighbours_a",
                                 "neighbours_b"]
    assert top.attrs["measure"] == "context"  # the default: ranked by z, then shift
    assert list(zip(-top["z"], -top["shift"])) == sorted(zip(-top["z"], -top["shift"]))
    assert (top["q"] < 0.05).all()  # planted shifts are significant
    by_split_half = most_shifted(alignment, "one", "two", top=5, min_count=MIN_COUNT, topn=4, measure="split_half")
    assert by_split_half["shift"].is_monotonic_decreasing
    assert all(len(n.split(", ")) == 4 for n in top["neighbours_a"])
    near = neighbours(alignment, "p1", topn=3)
    assert list(near["slice"]) == ["one"] * 3 + ["two"] * 3
    assert list(near.columns) == ["slice", "rank", "neighbour", "cosine", "count"]
    assert "p1" not in set(near["neighbour"])
    assert set(near.loc[near["slice"] == "two", "neighbour"]) <= topic_members(AWAY["p1"], AWAY)
    cross = cross_similarity(alignment, "p1")
    assert cross.loc["one", "one"] == pytest.approx(1.0, abs=1e-6)
    assert cross.loc["one", "two"] < 0.8


# ----------------------------------------------------------------------------------------- overlap
def _kv(counts: dict[str, int]) -> KeyedVectors:
    kv = KeyedVectors(vector_size=2)
    kv.add_vectors(list(counts), np.ones((len(counts), 2), dtype=np.float32))
    kv.allocate_vecattrs(attrs=["count"], types=[np.int64])
    kv.expandos["count"][:] = list(counts.values())
    return kv


def test_vocabulary_overlap_on_a_hand_built_case():
    slices = {"a": _kv({"x": 5, "y": 5, "z": 1}), "b": _kv({"y": 5, "z": 5, "w": 5}), "c": _kv({"q": 9})}
    compass = _kv({"x": 5, "y": 10, "z": 6, "w": 5, "q": 9})
    alignment = Alignment(CadeSettings(vector_size=2), compass, np.zeros((5, 2), np.float32), slices)
    overlap = vocabulary_overlap(alignment)
    assert overlap.loc["a", "b"] == pytest.approx(2 / 4)  # {y, z} of {x, y, z, w}
    assert overlap.loc["b", "a"] == overlap.loc["a", "b"]
    assert overlap.loc["a", "c"] == 0.0 and overlap.loc["a", "a"] == 1.0
    assert vocabulary_overlap(alignment, min_count=5).loc["a", "b"] == pytest.approx(1 / 4)  # z drops from a
    messages = overlap_warnings(overlap)
    assert len(messages) == 2 and all("'c'" in m for m in messages)
    assert overlap_warnings(overlap, threshold=0.6)[0].startswith("slices 'a' and 'b'")
    assert 0 < LOW_OVERLAP < 1
    # just under the threshold: the message never reads as if the overlap were equal to it
    near = pd.DataFrame([[1.0, 0.2996], [0.2996, 1.0]], index=["a", "b"], columns=["a", "b"])
    assert "share 29.9% of their vocabulary (Jaccard 0.299 < 0.3)" in overlap_warnings(near, threshold=0.3)[0]


# ------------------------------------------------------------------------------------- likelihood
def test_heldout_likelihood_prefers_the_slices_own_model():
    """Every word's topic is reassigned in slice two: each model should predict its own held-out text
    far better than the other slice's model predicts it."""
    words = [w for topic in TOPIC_WORDS for w in topic]
    home = {w: i % TOPICS for i, w in enumerate(words)}
    permuted = np.random.default_rng(5).permutation(len(words))
    away = {w: home[words[permuted[i]]] for i, w in enumerate(words)}
    empty = [[] for _ in range(TOPICS)]
    one = make_slice(1, home, sentences=2000, base=empty)
    two = make_slice(2, away, sentences=2000, base=empty)
    train_one, heldout_one = split_heldout(one, 0.1, seed=0)
    train_two, heldout_two = split_heldout(two, 0.1, seed=0)
    alignment = align({"one": train_one, "two": train_two}, small(0))
    own = log_likelihood(alignment, "one", heldout_one)
    other = log_likelihood(alignment, "two", heldout_one)
    assert own.predictions == len(heldout_one) * LENGTH and own.skipped == 0
    # Measured -3.27 vs -5.01 nats. A topic has 25 words, so the best possible is log(1/25) = -3.22
    # (perplexity 25); uniform over all 150 words is -5.01.
    assert own.mean > other.mean + 0.5
    assert own.perplexity < 30
    table = evaluate(alignment, {"one": heldout_one, "two": heldout_two})
    assert list(table["slice"]) == ["one", "two"]
    assert (table["log_likelihood"] > log_likelihood(alignment, "one", heldout_two).mean + 0.5).all()
    unknown = log_likelihood(alignment, "one", [["zzz", "yyy"]])
    assert unknown.predictions == 0 and unknown.skipped == 2 and np.isnan(unknown.mean)


def test_heldout_likelihood_skip_gram_counts_pairs(planted_slices):
    subset = {name: sentences[:500] for name, sentences in planted_slices.items()}
    alignment = align(subset, small(1, compass_epochs=3, slice_epochs=3))
    result = log_likelihood(alignment, "one", [["t0w0", "t0w1", "t0w2"]])
    assert result.predictions == 6  # each of 3 words predicts the other 2
    assert -10 < result.mean < 0


# ---------------------------------------------------------------------------------------- text
def test_sentences_from_texts_and_split_heldout():
    texts = ["The cat sat. A dog ran home!", None, float("nan"), "  ", "42 !!"]
    assert sentences_from_texts(texts) == [["the", "cat", "sat", "dog", "ran", "home"]]
    assert sentences_from_texts(texts, split=True) == [["the", "cat", "sat"], ["dog", "ran", "home"]]
    assert len(sentences_from_texts(["word " * 25000])) == 3  # cut at 10000 tokens
    assert [len(s) for s in cut_long([["a"] * 25000, ["b"]])] == [10000, 10000, 5000, 1]
    short = [["a"], ["b", "c"]]
    assert cut_long(short) is short
    sentences = [[str(i)] for i in range(20)]
    train, heldout = split_heldout(sentences, 0.25, seed=3)
    assert (train, heldout) == split_heldout(sentences, 0.25, seed=3)
    assert len(heldout) == 5 and sorted(train + heldout) == sorted(sentences)
    assert heldout != split_heldout(sentences, 0.25, seed=4)[1]
    assert heldout == sorted(heldout, key=lambda s: int(s[0]))  # original order kept
    with pytest.raises(CadeError, match="fraction"):
        split_heldout(sentences, 1.0)
    with pytest.raises(CadeError, match="1 sentence"):
        split_heldout([["a"]], 0.5)


# ---------------------------------------------------------------------------------------- errors
def test_bad_settings_name_the_field():
    with pytest.raises(CadeError, match=r"sg=2: Input should be 0 or 1"):
        CadeSettings(sg=2)
    with pytest.raises(CadeError, match="init='random'"):
        CadeSettings(init="random")
    with pytest.raises(CadeError, match="min_alpha"):
        CadeSettings(min_alpha=0.5)
    with pytest.raises(CadeError, match="negative=0: Input should be greater than 0"):
        CadeSettings(negative=0)
    with pytest.raises(CadeError, match="vector_size=32.0: Input should be a valid integer"):
        CadeSettings(vector_size=32.0)  # strict: no silent float-to-int


def test_bad_slices_raise_errors_naming_the_slice(planted_slices):
    one = planted_slices["one"][:200]
    with pytest.raises(CadeError, match="at least 2 slices.*got 1: one"):
        align({"one": one})
    with pytest.raises(CadeError, match="slice 'empty' is empty"):
        align({"one": one, "empty": []})
    with pytest.raises(CadeError, match="slice 'blank' is empty"):
        align({"one": one, "blank": [[], []]})
    with pytest.raises(CadeError, match=r"slice 'rare' has no word in the compass vocabulary.*min_count=5"):
        align({"one": one, "rare": [["hapax", "legomenon"]]})
    with pytest.raises(CadeError, match="slice 'raw' must be a list of token lists"):
        align({"one": one, "raw": ["an untokenised text"]})
    with pytest.raises(CadeError, match="slices must map a slice name"):
        align([one, one])
    with pytest.raises(CadeError, match="compass vocabulary is empty"):
        align({"a": [["x"]], "b": [["y"]]})


def test_query_errors_name_word_and_slice(planted):
    _, alignment = planted
    with pytest.raises(CadeError, match="word 'zebra' is not in slice 'one'.*compass vocabulary"):
        neighbours(alignment, "zebra")
    with pytest.raises(CadeError, match="unknown slice 'three'; slices: one, two"):
        neighbours(alignment, "p0", slices=["one", "three"])
    with pytest.raises(CadeError, match="unknown slice 'three'"):
        shift_table(alignment, "one", "three")
    lopsided = align(
        {"a": [["t0w0", "t0w1"]] * 5, "b": [["t0w0", "t0w2"]] * 5}, small(0, compass_epochs=1, slice_epochs=1)
    )
    with pytest.raises(CadeError, match="word 't0w1' is not in slice 'b' \\(it occurs in other slices only\\)"):
        neighbours(lopsided, "t0w1")
    assert list(neighbours(lopsided, "t0w1", slices=["a"])["slice"].unique()) == ["a"]


# ---------------------------------------------------------------------------------- save / load
def test_save_load_round_trip(planted, tmp_path):
    _, alignment = planted
    path = save_alignment(alignment, tmp_path / "cade")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cade"]  # no temp dir left behind
    manifest = json.loads((path / "cade.json").read_text())
    assert manifest["slices"] == {"one": "slices/00-one.safetensors", "two": "slices/01-two.safetensors"}
    alone = read_keyed_vectors(path / "slices/01-two.safetensors")  # one slice reads alone, no pickle
    assert alone.get_vecattr("p0", "count") == alignment.count("two", "p0")
    assert manifest["replicates"]["one"] == [["replicates/00-one-r0-h1.safetensors", "replicates/00-one-r0-h2.safetensors"],
                                             ["replicates/00-one-r1-h1.safetensors", "replicates/00-one-r1-h2.safetensors"]]
    assert all(b"pickle" not in f.read_bytes()[:200] and not f.read_bytes().startswith(b"\x80")
               for f in path.rglob("*") if f.is_file())
    again = save_alignment(alignment, tmp_path / "again")  # the same vectors give the same bytes
    assert all((path / f.relative_to(again)).read_bytes() == f.read_bytes() for f in again.rglob("*.safetensors"))
    shutil.rmtree(again)

    loaded = load_alignment(path)
    assert loaded.settings == alignment.settings and loaded.tokens == alignment.tokens
    assert np.array_equal(loaded.context, alignment.context)
    assert np.array_equal(loaded.compass.vectors, alignment.compass.vectors)
    for name in ("one", "two"):
        assert loaded.slices[name].index_to_key == alignment.slices[name].index_to_key
        assert np.array_equal(loaded.slices[name].vectors, alignment.slices[name].vectors)
        assert loaded.word_counts(name) == alignment.word_counts(name)
        assert loaded.stats[name].to_dict() == alignment.stats[name].to_dict()
        assert len(loaded.replicates[name]) == len(alignment.replicates[name]) == 2
        for (x1, x2), (y1, y2) in zip(loaded.replicates[name], alignment.replicates[name]):
            assert x1.index_to_key == y1.index_to_key and np.array_equal(x1.vectors, y1.vectors)
            assert np.array_equal(x2.vectors, y2.vectors) and x2.get_vecattr("p0", "count") == y2.get_vecattr("p0", "count")
        assert [len(q) for q in loaded.null_replicates[name]] == [4, 4]
        for saved, kept in zip(loaded.null_replicates[name], alignment.null_replicates[name]):
            assert all(np.array_equal(x.vectors, y.vectors) for x, y in zip(saved, kept))
    assert loaded.model is None and alignment.model is not None  # the compass model is not saved
    pd.testing.assert_frame_equal(
        shift_table(loaded, "one", "two", min_count=MIN_COUNT),
        shift_table(alignment, "one", "two", min_count=MIN_COUNT),
    )
    text = [["t0w0", "t0w1"]]
    assert log_likelihood(loaded, "one", text).mean == log_likelihood(alignment, "one", text).mean

    with pytest.raises(CadeError, match="already exists"):
        save_alignment(alignment, path)
    save_alignment(alignment, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cade"]
    with pytest.raises(CadeError, match="no cade.json"):
        load_alignment(tmp_path)


def test_failed_save_leaves_no_directory(planted, tmp_path, monkeypatch):
    _, alignment = planted
    calls = []

    def failing_write(kv, path):
        calls.append(path)
        if len(calls) == 3:  # compass and first slice written, second slice fails
            raise OSError("disk full")
        return original(kv, path)

    original = files_module.write_keyed_vectors
    monkeypatch.setattr(files_module, "write_keyed_vectors", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_alignment(alignment, tmp_path / "cade")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ plots
def test_plots_write_png_files(planted, tmp_path):
    _, alignment = planted
    heatmap = plot_overlap(vocabulary_overlap(alignment), tmp_path / "plots" / "overlap.png")
    panels = plot_neighbours(alignment, ["p0", "t1w1"], tmp_path / "neighbours.png", topn=4)
    for path in (heatmap, panels):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(CadeError, match="'zebra' is in none of the slices"):
        plot_neighbours(alignment, ["zebra"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
