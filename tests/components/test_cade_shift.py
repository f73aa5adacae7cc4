"""Tests for CADE's shift measures, their significance, the split-half replicates, epoch scaling, the
self-check and the stage's slice building: synthetic corpora with known answers.

Corpora: ``contexts_corpus`` gives every target word w<i> its own six context words (drawn once, shared
by all slices), so any two words are used differently and a swap always plants a real shift;
``topics_corpus`` (as in test_cade.py) has topic words plus rare "diffuse" words r<i> that appear in
every topic: unshifted but noisy, the words a plain cosine mistakes for shifts.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from gensim.models import KeyedVectors

from components.cade import CadeError, CadeSettings, align, matched_pairs, self_check, shift_table, swap_words
from components.cade.analysis import DEFAULT_MIN_COUNT, fewer_rows_reason
from components.cade.replicates import split_halves
from components.cade.report import generated_slice_texts
from components.cade.selfcheck import LOW_RECALL
from components.cade.shift import MIN_NULL_WORDS, pair_distance, significance, split_half_ratio, usable_measure
from semflow.config.cade import TRAINING_FIELDS, CadeConfig

TOPICS, PER_TOPIC, LENGTH = 6, 25, 12
PLANTED = [f"p{i}" for i in range(6)]
RARE = [f"r{i}" for i in range(30)]


def settings(**overrides) -> CadeSettings:
    # fixed epochs, one worker (deterministic), 2 split-half and 2 quarter replicates: a few seconds per
    # alignment on 2 cores
    values = dict(vector_size=24, compass_epochs=10, slice_epochs=10, epoch_words=0, replicates=2, null_replicates=2,
                  workers=1, seed=0)
    return CadeSettings(**values | overrides)


def contexts_corpus(seed: int, sentences: int, targets: int = 60, pool: int = 120) -> list[list[str]]:
    contexts = np.random.default_rng(12345)  # the same contexts in every slice
    own = [contexts.choice(pool, 6, replace=False) for _ in range(targets)]
    rng = np.random.default_rng(seed)
    out = []
    for t in rng.integers(targets, size=sentences):
        sentence = [f"c{c}" for c in rng.choice(own[t], 6)]
        sentence.insert(int(rng.integers(7)), f"w{t}")
        out.append(sentence)
    return out


def topics_corpus(seed: int, shifted: bool, sentences: int = 3000, rare_share: float = 0.3) -> list[list[str]]:
    """Planted word p<i> lives in topic i (slice one) or topic i+3 (``shifted``); one sentence in
    ``rare_share`` carries one of the RARE words, whatever its topic."""
    rng = np.random.default_rng(seed)
    topics = [[f"t{k}w{i}" for i in range(PER_TOPIC)] for k in range(TOPICS)]
    for i, p in enumerate(PLANTED):
        topics[(i + 3) % TOPICS if shifted else i % TOPICS].append(p)
    out = []
    for topic in rng.integers(TOPICS, size=sentences):
        sentence = [topics[topic][j] for j in rng.integers(len(topics[topic]), size=LENGTH)]
        if rng.random() < rare_share:
            sentence[rng.integers(LENGTH)] = RARE[rng.integers(len(RARE))]
        out.append(sentence)
    return out


@pytest.fixture(scope="module")
def rare_words_alignment():
    return align({"one": topics_corpus(1, False), "two": topics_corpus(2, True)}, settings(vector_size=32))


# ------------------------------------------------------------------------------------ one source of defaults
def test_settings_defaults_and_rules_come_from_the_config_section():
    config, defaults = CadeConfig(), CadeSettings()
    assert {f.name for f in fields(CadeSettings)} == set(TRAINING_FIELDS)
    for name in TRAINING_FIELDS:
        assert getattr(defaults, name) == getattr(config, name), name
    assert CadeSettings.from_config(CadeConfig(vector_size=7, replicates=0)) == CadeSettings(vector_size=7, replicates=0)
    assert DEFAULT_MIN_COUNT == config.shift_min_count
    with pytest.raises(CadeError, match="replicates=-1: Input should be greater than or equal to 0"):
        CadeSettings(replicates=-1)


def test_epochs_scale_with_the_size_of_the_text():
    s = CadeSettings(epoch_words=2_000_000, max_epochs=100, slice_epochs=5)
    assert s.epochs(80_000, 5) == 25
    assert s.epochs(1_000_000, 5) == 5  # a large slice keeps the least epochs
    assert s.epochs(1_000, 5) == 100  # capped
    assert CadeSettings(epoch_words=0).epochs(1_000, 5) == 5  # 0: CADE's fixed epochs
    small, large = contexts_corpus(1, 200), contexts_corpus(2, 2000)
    alignment = align({"small": small, "large": large}, settings(epoch_words=70_000, max_epochs=40, replicates=0))
    tokens = {n: sum(map(len, s)) for n, s in (("small", small), ("large", large))}  # 1,400 and 14,000
    assert alignment.stats["small"].epochs == 40 and alignment.stats["large"].epochs == 10
    assert alignment.stats["small"].raw_words == 40 * tokens["small"]
    assert alignment.stats["compass"].epochs == 10  # ceil(70,000 / 15,400) = 5 < compass_epochs


# ------------------------------------------------------------------------------------------ replicates
def test_split_halves_are_disjoint_seeded_and_differ_per_replicate():
    sentences = [[str(i)] for i in range(21)]
    one, two = split_halves(sentences, 0, "news", 0)
    assert {len(one), len(two)} == {10, 11} and sorted(one + two, key=lambda s: int(s[0])) == sentences
    assert one == sorted(one, key=lambda s: int(s[0]))  # original order kept
    assert (one, two) == split_halves(sentences, 0, "news", 0)
    assert one != split_halves(sentences, 0, "news", 1)[0] and one != split_halves(sentences, 0, "wiki", 0)[0]


def test_replicates_train_both_halves_against_the_frozen_context(rare_words_alignment):
    alignment = rare_words_alignment
    assert [len(alignment.replicates[n]) for n in ("one", "two")] == [2, 2]
    half1, half2 = alignment.replicates["one"][0]
    assert half1.get_vecattr("t0w0", "count") + half2.get_vecattr("t0w0", "count") == alignment.count("one", "t0w0")
    assert not np.array_equal(half1["t0w0"], half2["t0w0"])
    # both halves live in the compass's space: a word's two halves agree better than two topics' words do
    assert 1 - pair_distance(half1, half2, ["t0w0"])[0] > half1.similarity("t0w0", "t3w0") + 0.1


# ----------------------------------------------------------------------------------- measures and q
def test_split_half_finds_the_planted_words_that_cosine_mistakes_rare_words_for(rare_words_alignment):
    """Rare diffuse words are unshifted but their vectors are noisy, so their cosine across slices is low
    (measured: they fill cosine's top 6); dividing by their distance between halves of one slice puts them
    back among the unshifted words."""
    by_cosine = shift_table(rare_words_alignment, "one", "two", min_count=20, measure="cosine")
    by_split = shift_table(rare_words_alignment, "one", "two", min_count=20, measure="split_half")
    by_context = shift_table(rare_words_alignment, "one", "two", min_count=20)  # the default measure
    assert len(set(by_cosine["word"].head(6)) & set(PLANTED)) <= 2  # measured 0 of 6: all rare words
    assert set(by_split["word"].head(6)) == set(PLANTED)
    assert by_split.attrs["replicates"] == 2 and by_split.attrs["eligible"] == len(by_split)
    # the context test weighs each word's evidence by its own relabelling null: rare words are not shifts
    assert by_context.attrs["measure"] == "context" and set(by_context["word"].head(6)) == set(PLANTED)
    assert by_context.attrs["replicates"] == 0


@pytest.mark.parametrize("measure", ["split_half", "context"])
def test_significance_separates_planted_shifts_from_unshifted_words(rare_words_alignment, measure):
    table = shift_table(rare_words_alignment, "one", "two", min_count=20, measure=measure)
    if measure == "split_half":
        assert table.attrs["null"] == "quarters" and table.attrs["null_scores"] > 500  # 185 words x 2 slices x 2
    else:
        assert table.attrs["null"] == "permutation" and table.attrs["null_scores"] == 1000
    planted = table[table["word"].isin(PLANTED)]
    others = table[~table["word"].isin(PLANTED)]
    assert (planted["q"] < 0.01).all()  # measured 0.002-0.005 (split_half), < 1e-60 (context)
    assert planted["z"].min() > others["z"].max() + 1  # measured 3.6 vs 2.4 (split_half), 16.9 vs 3.0 (context)
    if measure == "split_half":
        assert (others["q"] >= 0.05).all()  # measured: the smallest is 0.20
    else:
        # Every topic here gained one planted word and lost another, so a topic word's contexts did change
        # a little, and the context test may call one a shift (measured: t4w14, q 0.038); the rare, noisy
        # words that fool the cosine never are.
        flagged = others[others["q"] < 0.05]
        assert len(flagged) <= 2 and not flagged["word"].isin(RARE).any()


@pytest.mark.parametrize("measure", ["split_half", "context"])
def test_null_slices_from_one_generator_have_no_significant_shift(measure):
    alignment = align({"one": contexts_corpus(1, 1500), "two": contexts_corpus(2, 1500)}, settings())
    table = shift_table(alignment, "one", "two", min_count=20, measure=measure)
    assert len(table) > MIN_NULL_WORDS and table.attrs["null"] == {"split_half": "quarters",
                                                                    "context": "permutation"}[measure]
    assert (table["q"] >= 0.05).all()  # measured: the smallest is 0.46 (split_half), 0.61 (context)
    if measure == "split_half":
        # the empirical null of the compared words (Efron), which the quarters replaced, calls some of them
        # shifts here (measured 8 of 152): the check above would catch a table that fell back to it
        assert (significance(table["shift"].to_numpy())[1] < 0.05).sum() >= 3


def test_significance_needs_enough_words_and_follows_the_scores():
    scores = np.exp(np.random.default_rng(0).normal(0, 0.1, 200))
    scores[:3] = [4.0, 3.0, 1.5]  # three words far above the rest
    z, q = significance(scores)
    assert list(np.argsort(-z)[:3]) == [0, 1, 2] and (q[:2] < 1e-6).all() and (q[3:] > 0.05).mean() > 0.95
    few_z, few_q = significance(scores[: MIN_NULL_WORDS - 1])
    assert np.isnan(few_z).all() and np.isnan(few_q).all()
    stratified = significance(scores, counts=np.arange(200), window=50)[0]
    assert stratified[0] > 10 and np.isfinite(stratified).all()
    null = np.random.default_rng(1).normal(0, 0.1, 500)  # pseudo-pair log scores: a t is fitted to them
    fitted_z, fitted_q = significance(scores, null=null)
    assert fitted_q[0] < 1e-3 and (fitted_q[3:] > 0.05).mean() > 0.9 and fitted_z[0] > fitted_z[1] > fitted_z[2]
    assert np.isnan(significance(scores, null=null[:10])[1]).all()  # too few null scores to fit


def test_distances_on_hand_built_vectors():
    rng = np.random.default_rng(0)
    words = [f"x{i}" for i in range(40)]
    base = rng.normal(size=(40, 8)).astype(np.float32)
    moved = base.copy()
    moved[0] = base[20]  # x0 now sits where x20 is: its neighbours change
    kv_a, kv_b = KeyedVectors(8), KeyedVectors(8)
    kv_a.add_vectors(words, base)
    kv_b.add_vectors(words, moved)
    for distance in ("cosine", "centred", "local", "anchors"):
        same = pair_distance(kv_a, kv_a, words, distance)
        assert np.allclose(same, 0, atol=1e-6), distance
        d = pair_distance(kv_a, kv_b, words, distance)
        assert np.argmax(d) == 0 and d[0] > 0.3, distance
    assert np.isnan(pair_distance(kv_a, kv_b, ["x1", "absent"])[1])
    with pytest.raises(CadeError, match="unknown distance 'euclid'"):
        pair_distance(kv_a, kv_b, words, "euclid")


def test_split_half_without_replicates_says_so_and_tables_fall_back_to_cosine():
    alignment = align({"one": contexts_corpus(1, 300), "two": contexts_corpus(2, 300)}, settings(replicates=0))
    with pytest.raises(CadeError, match="slice\\(s\\) 'one', 'two' have none"):
        split_half_ratio(alignment, "one", "two", ["c1"])
    assert usable_measure(alignment, "one", "two", "split_half") == (
        "cosine", "slice(s) one, two have no split-half replicates (replicates=0, or a single text): ranked by cosine "
        "instead of split_half")
    assert usable_measure(alignment, "one", "two", "cosine") == ("cosine", None)
    with pytest.raises(CadeError, match="unknown shift measure 'euclid'"):
        shift_table(alignment, "one", "two", measure="euclid")


def test_fewer_rows_reason_names_the_rule_and_the_slices():
    alignment = align({"one": contexts_corpus(1, 300), "two": contexts_corpus(2, 300)}, settings())
    table = shift_table(alignment, "one", "two", min_count=30, top=20)
    assert 0 < len(table) < 20 and len(table) == table.attrs["eligible"]
    reason = fewer_rows_reason(table, 20)
    assert reason.startswith(f"{len(table)} of --top 20 rows: only {len(table)} word(s) occur >= 30 times in both 'one'")
    assert "(2100 tokens)" in reason
    assert fewer_rows_reason(table, len(table)) is None


# ------------------------------------------------------------------------------------------ self-check
def test_matched_pairs_and_swap_words():
    counts_a = {"a": 50, "b": 52, "c": 100, "d": 120, "e": 121, "rare": 3, "the": 90}
    counts_b = {"a": 40, "b": 44, "c": 100, "d": 110, "e": 118, "rare": 30, "the": 95}
    pairs = matched_pairs(counts_a, counts_b, k=5, min_count=20, seed=0, exclude={"the"})
    used = [w for p in pairs for w in p]
    assert len(used) == len(set(used)) and "rare" not in used and "the" not in used
    assert all(max(counts_b[x], counts_b[y]) <= 1.25 * min(counts_b[x], counts_b[y]) for x, y in pairs)
    assert pairs == matched_pairs(counts_a, counts_b, k=5, min_count=20, seed=0, exclude={"the"})
    assert set(map(frozenset, pairs)) <= {frozenset("ab"), frozenset("cd"), frozenset("de")}
    assert swap_words([["a", "b", "x"], ["b"]], [("a", "b")]) == [["b", "a", "x"], ["a"]]
    assert matched_pairs({"a": 50}, {"a": 50}, k=2, min_count=20, seed=0) == []


def test_self_check_finds_swaps_in_enough_text_and_reports_low_recall_on_small_slices():
    big = {"one": contexts_corpus(1, 1500), "two": contexts_corpus(2, 1500)}
    check = self_check(align(big, settings()), big, "one", "two", min_count=20, pairs=4)
    assert check.recall == 1.0 and check.message is None  # measured 8 of 8
    assert len(check.pairs) == 4 and check.table["found"].all() and (check.table["rank"] <= 16).all()
    small = {"one": contexts_corpus(1, 300), "two": contexts_corpus(2, 300)}
    weak = self_check(align(small, settings()), small, "one", "two", min_count=5, pairs=4)
    assert weak.recall < LOW_RECALL and "more text per slice helps" in weak.message  # measured 0.12
    tiny = {"one": contexts_corpus(1, 100), "two": contexts_corpus(2, 100)}
    none = self_check(align(tiny, settings()), tiny, "one", "two", min_count=20, pairs=4)
    assert np.isnan(none.recall) and none.pairs == [] and "nothing to plant" in none.message


def test_self_check_needs_the_in_memory_alignment(tmp_path):
    from components.cade import load_alignment, save_alignment

    small = {"one": contexts_corpus(1, 200), "two": contexts_corpus(2, 200)}
    loaded = load_alignment(save_alignment(align(small, settings(replicates=0)), tmp_path / "cade"))
    with pytest.raises(CadeError, match="not one loaded from disk"):
        self_check(loaded, small, "one", "two", min_count=5)


# ---------------------------------------------------------------------------- the stage's generated slices
def test_generated_slices_answer_the_same_prompts():
    responses = pd.DataFrame({"split": ["train"] * 6 + ["test"] * 2, "reference": [f"ref {i}" for i in range(8)],
                              "response": [f"teacher {i}" for i in range(8)]})
    evaluation = pd.DataFrame({"reference": ["ref 6", "ref 7"], "teacher": ["teacher 6", "teacher 7"],
                               "student_before": ["before 6", "before 7"], "student_after": ["after 6", None]})
    texts, note = generated_slice_texts(responses, evaluation)
    assert texts == {"references": ["ref 6", "ref 7"], "teacher": ["teacher 6", "teacher 7"],
                     "student_before": ["before 6", "before 7"], "student_after": ["after 6"]}
    assert note == "test prompts of distill_student's eval table (2)"
    texts, note = generated_slice_texts(responses, None)
    assert texts["teacher"] == [f"teacher {i}" for i in range(8)] and "every prompt" in note
    assert generated_slice_texts(None, None) == ({}, "none")
