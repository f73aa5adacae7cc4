"""SE-DSI building blocks without a model: rehearsal contents (exact choices per style), ED -> document
rankings, first-hit MRR / Hits@k through ir-measures, and the BM25 baseline."""

import pytest

from components.sedsi import (
    BM25Index,
    Rehearsal,
    RehearsalSettings,
    collision_rate,
    evaluate_run,
    expand_rankings,
    invert_eds,
    passages,
    rehearsal_contents,
    select_rehearsal,
    split_sentences,
    textrank_scores,
)

NUMBERS = "one two three four five six seven eight nine ten eleven twelve".split()
TWELVE = [f"Sentence {w} is here." for w in NUMBERS]
DOC = " ".join(TWELVE)

# sentence 4 shares stems with 1, 2 and 3; 5 and 6 share nothing with anything
CENTRAL = [
    "Cats chase mice.",
    "Dogs bark loudly.",
    "Birds sing songs.",
    "Cats, dogs and birds are pets that chase, bark and sing songs loudly.",
    "Fish swim.",
    "Rain falls today.",
]


def window(first, last):  # 1-based sentence numbers, inclusive
    return " ".join(TWELVE[first - 1:last])


# --- sentences and passages ------------------------------------------------------------------------------

def test_split_sentences_strips_and_drops_empty_segments():
    assert split_sentences(DOC) == TWELVE
    assert split_sentences("  First one.\n\n  Second one!  ") == ["First one.", "Second one!"]
    assert split_sentences(" \n\t ") == []


@pytest.mark.parametrize("n, starts", [
    (12, [0, 2, 4, 6, 7]),  # 6..10 ends before 12: one more window ending at n
    (11, [0, 2, 4, 6]),     # 6..10 reaches n: nothing added
    (6, [0, 1]),
    (7, [0, 2]),
    (5, [0]),
])
def test_passage_windows_start_every_stride_and_cover_the_tail(n, starts):
    sents = [f"s{i}" for i in range(n)]
    assert passages(sents, size=5, stride=2) == [" ".join(sents[s:s + 5]) for s in starts]


def test_short_or_empty_documents_give_one_or_no_passage():
    assert passages(["a.", "b.", "c."]) == ["a. b. c."]
    assert passages([]) == []


@pytest.mark.parametrize("size, stride", [(0, 1), (5, 0), (5, 6)])
def test_passage_window_settings_are_checked(size, stride):
    with pytest.raises(ValueError, match="passage"):
        passages(TWELVE, size=size, stride=stride)


# --- rehearsal styles ------------------------------------------------------------------------------------

def test_leading_takes_first_three_passages_and_first_six_sentences():
    rc = select_rehearsal(DOC, "leading")
    assert rc.passages == [window(1, 5), window(3, 7), window(5, 9)]
    assert rc.sentences == TWELVE[:6]
    assert rc.units() == rc.passages + rc.sentences
    assert rehearsal_contents(DOC) == rc


def test_leading_on_a_short_document_keeps_what_there_is():
    text = "Alpha is first. Beta is second. Gamma is third."
    rc = select_rehearsal(text, "leading")
    assert rc == Rehearsal(passages=["Alpha is first. Beta is second. Gamma is third."],
                           sentences=["Alpha is first.", "Beta is second.", "Gamma is third."])
    assert select_rehearsal(text, "summary").passages == rc.passages
    assert sorted(select_rehearsal(text, "random", seed=3).sentences) == sorted(rc.sentences)


def test_summary_picks_the_central_sentence():
    text = " ".join(CENTRAL)
    assert select_rehearsal(text, "summary", n_sentences=1).sentences == [CENTRAL[3]]
    scores = textrank_scores(CENTRAL)
    assert max(range(6), key=scores.__getitem__) == 3
    assert scores[4] == scores[5] == 0.0  # similar to nothing, as in summa


def test_summary_returns_its_choice_in_document_order():
    text = " ".join(CENTRAL)
    # ranked 4 > 2 = 3 > 1: the top three come back as 2, 3, 4
    assert select_rehearsal(text, "summary", n_sentences=3).sentences == CENTRAL[1:4]
    rc = select_rehearsal(text, "summary")  # paper counts: 1 passage, 6 sentences (all there are)
    assert rc.sentences == CENTRAL
    assert len(rc.passages) == 1 and rc.passages[0] in passages(CENTRAL)


def test_summary_ties_go_to_the_earlier_unit():
    unrelated = ["Apples grow.", "Rivers flow.", "Stars shine.", "Engines roar."]
    assert select_rehearsal(" ".join(unrelated), "summary", n_sentences=2).sentences == unrelated[:2]


def test_random_is_seeded_sorted_and_a_subset():
    first = select_rehearsal(DOC, "random", seed=7)
    assert select_rehearsal(DOC, "random", seed=7) == first
    assert select_rehearsal(DOC, "random", seed="7:doc-1") == select_rehearsal(DOC, "random", seed="7:doc-1")
    assert len(first.passages) == 3 and len(first.sentences) == 6
    assert first.sentences == [s for s in TWELVE if s in first.sentences]  # document order
    windows = passages(TWELVE)
    assert first.passages == [p for p in windows if p in first.passages]
    assert len({tuple(select_rehearsal(DOC, "random", seed=s).sentences) for s in range(5)}) > 1


def test_settings_choose_counts_per_style():
    rc = rehearsal_contents(DOC, RehearsalSettings(style="summary", summary_passages=2, summary_sentences=4))
    assert (len(rc.passages), len(rc.sentences)) == (2, 4)
    rc = rehearsal_contents(DOC, RehearsalSettings(passages=1, sentences=2))
    assert rc == Rehearsal([window(1, 5)], TWELVE[:2])
    with pytest.raises(ValueError, match="style"):
        RehearsalSettings(style="centroid")
    with pytest.raises(ValueError, match="stride"):
        RehearsalSettings(passage_size=2, passage_stride=3)


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_documents_are_refused(text):
    with pytest.raises(ValueError, match="empty"):
        select_rehearsal(text, "leading")


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style"):
        select_rehearsal(DOC, "centroid")


# --- ED rankings -> document rankings --------------------------------------------------------------------

ED_TO_DOCS = {"e1": ["d5", "d2"], "e2": ["d1"], "e3": ["d9"]}


def test_a_shared_ed_expands_to_its_documents_in_id_order_at_consecutive_ranks():
    ranked = [[("e2", -0.1), ("e1", -0.2), ("e3", -0.3)], [("e1", -0.5)]]
    assert expand_rankings(ranked, ED_TO_DOCS) == [["d1", "d2", "d5", "d9"], ["d2", "d5"]]


def test_expansion_keeps_the_first_occurrence_of_a_document():
    ed_to_docs = {**ED_TO_DOCS, "e4": ["d2", "d7"]}
    assert expand_rankings([["e1", "e2", "e1", "e4"]], ed_to_docs) == [["d2", "d5", "d1", "d7"]]


def test_unknown_eds_are_skipped_or_refused():
    assert expand_rankings([[("zz", 0.0), ("e2", -1.0)]], ED_TO_DOCS) == [["d1"]]
    with pytest.raises(KeyError, match="zz"):
        expand_rankings([[("zz", 0.0)]], ED_TO_DOCS, unknown="error")


def test_invert_eds_and_collision_rate():
    doc_to_ed = {f"d{i}": f"ed{i}" for i in range(10)} | {"d1": "ed0", "d2": "ed0"}
    assert invert_eds(doc_to_ed)["ed0"] == ["d0", "d1", "d2"]
    assert collision_rate(invert_eds(doc_to_ed)) == pytest.approx(0.3)
    assert collision_rate(ED_TO_DOCS) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty"):
        collision_rate({})


# --- metrics ---------------------------------------------------------------------------------------------

def test_mrr_counts_the_first_relevant_document():
    run = {"q": ["x1", "rel_a", "x2", "x3", "rel_b", "x4"]}
    scores = evaluate_run(run, {"q": {"rel_a": 1, "rel_b": 1}})
    assert scores == pytest.approx({"hits@1": 0.0, "hits@10": 1.0, "mrr@3": 0.5, "mrr@10": 0.5, "mrr@20": 0.5})


def test_hits_at_1_against_hits_at_10_and_a_miss():
    run = {
        "top": ["a", "b"],                                   # hit at rank 1
        "third": ["x", "y", "c"],                            # hit at rank 3
        "late": [f"n{i}" for i in range(10)] + ["d"],        # rank 11: outside the top 10
        "none": [],                                          # nothing retrieved
    }
    qrels = {"top": {"a": 1}, "third": {"c": 2}, "late": {"d": 1}, "none": {"e": 1}, "absent": {"f": 1}}
    scores = evaluate_run(run, qrels)
    assert scores["hits@1"] == pytest.approx(1 / 5)
    assert scores["hits@10"] == pytest.approx(2 / 5)
    assert scores["mrr@10"] == pytest.approx((1 + 1 / 3) / 5)
    assert scores["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 5)
    assert scores["mrr@3"] == pytest.approx((1 + 1 / 3) / 5)


def test_hits_is_success_not_a_count_of_relevant_documents():
    scores = evaluate_run({"q": ["a", "b", "c"]}, {"q": {"a": 1, "b": 1, "c": 1}})
    assert scores["hits@10"] == 1.0 and scores["mrr@10"] == 1.0


def test_duplicates_in_a_run_keep_their_first_rank():
    assert evaluate_run({"q": ["x", "rel", "y", "rel"]}, {"q": {"rel": 1}}, ["mrr@10"]) == {"mrr@10": 0.5}
    assert evaluate_run({"q": ["x", "x", "rel"]}, {"q": {"rel": 1}}, ["mrr@10"]) == {"mrr@10": 0.5}


def test_a_run_that_retrieved_nothing_scores_zero():
    scores = evaluate_run({"q1": [], "q2": []}, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert scores == {"hits@1": 0.0, "hits@10": 0.0, "mrr@3": 0.0, "mrr@10": 0.0, "mrr@20": 0.0}


def test_expanded_collision_ranks_feed_the_metrics():
    docs = expand_rankings([[("e1", -0.1), ("e2", -0.2)]], ED_TO_DOCS)[0]     # d2, d5, d1
    scores = evaluate_run({"q": docs}, {"q": {"d5": 1}})
    assert scores["hits@1"] == 0.0 and scores["mrr@10"] == 0.5


def test_bad_qrels_and_stray_queries_are_refused():
    with pytest.raises(ValueError, match="'q2'"):
        evaluate_run({"q1": ["a"]}, {"q1": {"a": 1}, "q2": {}})
    with pytest.raises(ValueError, match="'q2'"):
        evaluate_run({"q1": ["a"]}, {"q1": {"a": 1}, "q2": {"b": 0}})
    with pytest.raises(ValueError, match="no qrels"):
        evaluate_run({"q1": ["a"], "q9": ["b"]}, {"q1": {"a": 1}})


# --- BM25 ------------------------------------------------------------------------------------------------

CORPUS = {
    "d1": "The weather today is sunny and warm across the region.",
    "d2": "A zeppelin floated over the city while the weather stayed calm.",
    "d3": "Sunny weather brings warm evenings and calm seas.",
}


@pytest.fixture(scope="module")
def bm25():
    return BM25Index.build(list(CORPUS), list(CORPUS.values()))


def test_bm25_ranks_the_rare_term_document_first(bm25):
    (ranking,) = bm25.search(["weather zeppelin"], k=3)
    assert ranking[0][0] == "d2"
    assert [score for _, score in ranking] == sorted((score for _, score in ranking), reverse=True)


def test_bm25_clamps_k_and_drops_documents_without_a_shared_term(bm25):
    weather, nothing = bm25.search(["weather", "the of and"], k=100)
    assert sorted(doc for doc, _ in weather) == ["d1", "d2", "d3"]
    assert nothing == []
    assert len(bm25.search(["weather"], k=1)[0]) == 1


def test_bm25_save_load_round_trip(bm25, tmp_path):
    queries = ["sunny warm", "zeppelin city", "calm seas"]
    loaded = BM25Index.load(bm25.save(tmp_path / "bm25"))
    assert loaded.doc_ids == bm25.doc_ids
    assert loaded.search(queries, k=3) == bm25.search(queries, k=3)


def test_bm25_refuses_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="one id per text"):
        BM25Index.build(["d1"], ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        BM25Index.build(["d1", "d1"], ["a b", "c d"])
    with pytest.raises(FileNotFoundError):
        BM25Index.load(tmp_path)
