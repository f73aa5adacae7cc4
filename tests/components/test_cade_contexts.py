"""Tests for components.cade.contexts, the context test: hand-checked statistics, the exact and the
approximated null, the text-level relabelling, the two layouts, and planted and null slices with known
answers (tests/components/test_cade.py's synthetic topics)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from gensim.models import KeyedVectors
from scipy.stats import norm

from components.cade import Alignment, CadeError, CadeSettings, load_alignment, save_alignment, shift_table
from components.cade.analysis import few_texts_reason
from components.cade.contexts import _statistics, blocks, context_test, occurrences, permutation_p, smallest_p
from components.cade.shift import eligible_words, usable_measure
from tests.components.test_cade import AWAY, HOME, MIN_COUNT, PLANTED, make_slice

DIM = 4


def toy_alignment(texts: dict[str, list[list[str]]], rows: dict[str, list[float]], window: int = 2) -> Alignment:
    """An Alignment holding only what the context test reads: a compass vocabulary, its context rows
    (``rows``: word -> context vector) and the slices' texts."""
    words = list(rows)
    compass = KeyedVectors(vector_size=DIM)
    compass.add_vectors(words, np.ones((len(words), DIM), dtype=np.float32))
    compass.allocate_vecattrs(attrs=["count"], types=[np.int64])
    context = np.array([rows[w] for w in words], dtype=np.float32)
    return Alignment(settings=CadeSettings(vector_size=DIM, window=window), compass=compass, context=context,
                     slices={}, texts=texts)


ONE_HOT = {name: list(np.eye(DIM)[i]) for i, name in enumerate(["x", "y", "z", "q"])} | {"w": [0.0] * DIM}


# ------------------------------------------------------------------------------------ statistics
def test_occurrence_contexts_are_weighted_by_distance_and_stop_at_a_text_end():
    # window 2: weights 1 (distance 1) and 1/2 (distance 2); "w" ends text 0 and starts text 1
    occ = occurrences([["x", "y", "w"], ["w", "z", "unknown", "q"]], ["w"], {k: i for i, k in enumerate(ONE_HOT)},
                      np.array(list(ONE_HOT.values())), window=2)
    assert occ.word.tolist() == [0, 0] and occ.text.tolist() == [0, 1]
    # text 0: left = 1 * y + 0.5 * x, nothing on the right (the window does not run into text 1)
    assert occ.sums[0, 0].tolist() == [0.5, 1.0, 0.0, 0.0] and occ.mass[:, 0].tolist() == [1.5, 0.0]
    # text 1: right = 1 * z; "unknown" (no compass row) is skipped, not counted as weight
    assert occ.sums[1, 1].tolist() == [0.0, 0.0, 1.0, 0.0] and occ.mass[:, 1].tolist() == [0.0, 1.0]


def test_exact_p_enumerates_every_relabelling_of_the_texts():
    rng = np.random.default_rng(0)
    sums, counts = rng.normal(size=(6, 3)), np.array([1.0, 2.0, 1.0, 3.0, 1.0, 2.0])
    sums[:2] += 3 * counts[:2, None]  # slice a's two texts far from the rest
    ratio, p, exact = permutation_p(sums, counts, 2, permutations=1000, rng=rng)
    statistics = []
    for chosen in combinations(range(6), 2):  # by hand: the 15 ways to give slice a two of the six texts
        in_a = np.zeros(6, dtype=bool)
        in_a[list(chosen)] = True
        mean_a = sums[in_a].sum(0) / counts[in_a].sum()
        mean_b = sums[~in_a].sum(0) / counts[~in_a].sum()
        statistics.append(((mean_a - mean_b) ** 2).sum())
    observed = statistics[0]  # chosen == (0, 1)
    assert exact
    assert p == pytest.approx(np.mean(np.array(statistics) >= observed)) and p == pytest.approx(1 / 15)
    assert ratio == pytest.approx(observed / np.mean(statistics))


def test_three_moment_p_matches_a_long_permutation_run():
    """Past the enumeration limit p comes from a chi-square with the null's three moments; here it is
    checked against 200,000 relabellings (empirical p 0.000575 when written)."""
    rng = np.random.default_rng(0)
    sums = rng.normal(size=(60, 20))
    counts = rng.integers(1, 4, 60).astype(float)
    sums *= counts[:, None] ** 0.5
    sums[:30, 0] += 0.9 * counts[:30]
    _, p, exact = permutation_p(sums, counts, 30, permutations=1000, rng=np.random.default_rng(1))
    observed = np.zeros((1, 60))
    observed[0, :30] = 1
    t_obs = _statistics(sums, counts, observed)[0]
    draws = np.random.default_rng(2)
    hits = 0
    for _ in range(100):
        labels = np.zeros((2000, 60))
        np.put_along_axis(labels, np.argsort(draws.random((2000, 60)), axis=1)[:, :30], 1.0, axis=1)
        hits += int((_statistics(sums, counts, labels) >= t_obs).sum())
    empirical = hits / 200_000
    assert not exact and empirical < 1e-3
    assert empirical / 2 < p < empirical * 2  # 1 / (permutations + 1) could never get there


def test_relabelling_moves_whole_texts():
    """A word used one odd way many times inside one text is that text's habit, not a shift: the same
    occurrences spread over as many texts are a shift."""
    plain = [["x", "w", "y"]] * 20
    odd_once = [["z", "w", "q"] * 10]  # ten odd uses in one text of slice b
    odd_spread = [["z", "w", "q"]] * 10  # the same ten uses, one per text
    clustered = toy_alignment({"a": plain, "b": plain[:10] + odd_once}, ONE_HOT, window=1)
    spread = toy_alignment({"a": plain, "b": plain[:10] + odd_spread}, ONE_HOT, window=1)
    p_clustered = context_test(clustered, "a", "b", ["w"]).p[0]
    p_spread = context_test(spread, "a", "b", ["w"]).p[0]
    # Clustered: T is largest when the odd text sits in the smaller slice, which 11 of 31 texts'
    # relabellings do: a two-valued null, resolved by the relabellings themselves (a fitted chi-square
    # tail alone said 0.10 on such a null). Spread: all ten odd texts land in one slice in
    # 2 C(30, 20) / C(40, 20) = 4.4e-4 of the relabellings: too few hits among 1,000, so the fitted
    # tail answers (9.9e-5 when written: on a null of eleven distinct values it is within 5x, not exact).
    assert p_clustered == pytest.approx(11 / 31, abs=0.03)
    assert 4.4e-4 / 5 < p_spread < 4.4e-4 * 5


def test_sides_sees_a_word_whose_left_and_right_contexts_trade_places():
    # slice a: "x w y"; slice b: "y w x": the same window mean, mirrored sides
    texts = {"a": [["x", "w", "y"]] * 15, "b": [["y", "w", "x"]] * 15}
    alignment = toy_alignment(texts, ONE_HOT, window=1)
    sides = context_test(alignment, "a", "b", ["w"], layout="sides")
    window = context_test(alignment, "a", "b", ["w"], layout="window")
    assert sides.p[0] < 1e-6 and sides.shift[0] > 10
    assert window.p[0] == 1.0 and window.shift[0] == 1.0  # nothing differs in one mean over the window


def test_bad_arguments_are_one_clear_error():
    alignment = toy_alignment({"a": [["x", "w"]], "b": [["w", "y"]]}, ONE_HOT)
    with pytest.raises(CadeError, match="unknown context layout 'left'"):
        context_test(alignment, "a", "b", ["w"], layout="left")
    with pytest.raises(CadeError, match="permutations must be >= 10"):
        context_test(alignment, "a", "b", ["w"], permutations=5)
    with pytest.raises(CadeError, match="needs slice 'c''s texts"):
        context_test(alignment, "a", "c", ["w"])


# ------------------------------------------------------------------------- planted and null slices
@pytest.fixture(scope="module")
def synthetic():
    """The synthetic topics of test_cade.py: "one" vs "two" with the planted words moved, and two
    unchanged slices drawn from the same generator (a null pair)."""
    from components.cade import align

    slices = {"one": make_slice(1, HOME, 2000), "two": make_slice(2, AWAY, 2000), "same": make_slice(3, HOME, 2000)}
    settings = CadeSettings(vector_size=32, compass_epochs=5, slice_epochs=5, epoch_words=0, workers=2, seed=0)
    return align(slices, settings)


def test_planted_words_are_found_and_significant(synthetic):
    table = shift_table(synthetic, "one", "two", min_count=MIN_COUNT, topn=1)
    assert table.attrs["measure"] == "context" and table.attrs["null"] == "permutation"
    assert set(table["word"].head(len(PLANTED))) == set(PLANTED)
    planted = table[table["word"].isin(PLANTED)]
    assert (planted["q"] < 1e-6).all() and (planted["shift"] > 10).all()
    # (a few topic words are significant too: their topic gained or lost a planted word, so their
    # contexts did change; the null pair below shows unchanged slices call no word a shift)
    # ranked by z, then shift
    order = list(zip(-table["z"], -table["shift"]))
    assert order == sorted(order)


def test_a_null_pair_calls_no_word_a_shift_and_its_p_values_are_spread(synthetic):
    table = shift_table(synthetic, "one", "same", min_count=MIN_COUNT, topn=1)
    assert len(table) == 150 + len(PLANTED)
    assert (table["q"] >= 0.05).all()
    p = norm.sf(table["z"].to_numpy())
    # calibrated: about 5% of unchanged words below 0.05, about half below 0.5
    assert (p < 0.05).mean() < 0.12 and 0.3 < (p < 0.5).mean() < 0.7


def test_large_slices_are_tested_a_block_of_words_at_a_time_with_the_same_result(synthetic, monkeypatch):
    import components.cade.contexts as contexts

    words = eligible_words(synthetic, "one", "two", MIN_COUNT)
    whole = context_test(synthetic, "one", "two", words)
    counts = sum(contexts.tokens(synthetic.texts[s], words, synthetic.compass.key_to_index).counts(len(words))
                 for s in ("one", "two"))
    budget = int(counts.sum() // 7)
    assert len(contexts.blocks(counts, budget)) >= 7
    monkeypatch.setattr(contexts, "MAX_OCCURRENCES", budget)
    held = []  # occurrences collected per call, slice a's then slice b's for each block (the fill pass, then the test)
    collect = contexts.collect

    def counting_collect(*args, **kwargs):
        occ = collect(*args, **kwargs)
        held.append(len(occ.word))
        return occ

    monkeypatch.setattr(contexts, "collect", counting_collect)
    blocked = context_test(synthetic, "one", "two", words)
    per_block = [a + b for a, b in zip(held[::2], held[1::2])]
    assert max(per_block) <= budget < counts.sum()  # (no single word here is over the budget)
    np.testing.assert_allclose(blocked.shift, whole.shift, rtol=1e-9)
    np.testing.assert_allclose(blocked.p, whole.p, rtol=1e-9)


def test_blocks_cover_every_word_once_within_the_budget():
    counts = np.array([3, 4, 9, 1, 1, 12, 2])
    spans = blocks(counts, 8)
    assert spans == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7)]  # a word over the budget stands alone
    assert [i for s, e in spans for i in range(s, e)] == list(range(len(counts)))


# ---------------------------------------------------------------------------------- persistence
def test_texts_are_saved_with_the_alignment_and_an_older_one_falls_back(tmp_path):
    texts = {"a": [["x", "w", "y"]] * 15, "b": [["y", "w", "x"]] * 15}
    alignment = toy_alignment(texts, ONE_HOT, window=1)
    alignment.slices = {name: alignment.compass for name in texts}
    path = save_alignment(alignment, tmp_path / "cade")
    assert load_alignment(path).texts == texts
    assert usable_measure(load_alignment(path), "a", "b", "context") == ("context", None)
    (path / "texts.json.gz").unlink()  # as a format-3 alignment was saved
    measure, why = usable_measure(load_alignment(path), "a", "b", "context")
    assert measure == "cosine" and "have no texts" in why
    # the bytes do not depend on when they were written
    first = (save_alignment(alignment, tmp_path / "x") / "texts.json.gz").read_bytes()
    assert first == (save_alignment(alignment, tmp_path / "y") / "texts.json.gz").read_bytes()


def test_an_empty_context_table_still_names_its_null():
    alignment = toy_alignment({"a": [["x", "w", "y"]] * 3, "b": [["y", "w", "x"]] * 3}, ONE_HOT, window=1)
    alignment.slices = {name: alignment.compass for name in ("a", "b")}
    alignment.compass.expandos["count"][:] = 3
    table = shift_table(alignment, "a", "b", min_count=20, topn=1)
    assert len(table) == 0 and table.attrs["measure"] == "context" and table.attrs["null"] == "permutation"


def test_slices_of_a_few_texts_say_why_no_word_can_be_significant():
    # the left/right trade of test_sides_...: certain with 15 texts a side, unprovable with 2
    few = toy_alignment({"a": [["x", "w", "y"] * 10] * 2, "b": [["y", "w", "x"] * 10] * 2}, ONE_HOT, window=1)
    many = toy_alignment({"a": [["x", "w", "y"]] * 15, "b": [["y", "w", "x"]] * 15}, ONE_HOT, window=1)
    for alignment in (few, many):
        alignment.slices = {name: alignment.compass for name in ("a", "b")}
        alignment.compass.expandos["count"][:] = 20
    table = shift_table(few, "a", "b", min_count=20, topn=1)
    assert table.attrs["texts_a"] == table.attrs["texts_b"] == 2
    assert table.set_index("word").loc["w", "q"] == pytest.approx(2 / 6)  # the observed split and its mirror
    reason = few_texts_reason(table, 0.05)
    assert reason.startswith("no word can reach q < 0.05") and "'a' (2 text(s)) and 'b' (2) allow no p below 0.17" in reason
    assert smallest_p(2, 2) == pytest.approx(1 / 6) and smallest_p(0, 5) == 1.0
    assert few_texts_reason(shift_table(many, "a", "b", min_count=20, topn=1), 0.05) is None
