"""SE-DSI evaluation: reciprocal-rank fusion, the paired bootstrap, named query sets (labelled, titles,
pseudo) and every system cut at the same depth."""

import pytest

from components.models.tiny import build_tiny_model
from components.sedsi import BM25Index, Descriptions, SedsiIndex
from components.sedsi.evaluation import compare_systems, flat_metrics, headline, query_sets, title_queries
from components.sedsi.fusion import reciprocal_rank_fusion
from components.sedsi.metrics import DEFAULT_METRICS, evaluate_per_query, evaluate_run, paired_bootstrap
from components.sedsi.queries import LabelledQueries
from semflow.config import TinyModelConfig


def test_reciprocal_rank_fusion_sums_inverse_ranks():
    a, b = {"q": ["x", "y", "z"]}, {"q": ["y", "w"], "r": ["v"]}
    fused = reciprocal_rank_fusion([a, b], k=1)
    # y: 1/3 + 1/2; x: 1/2; w: 1/3; z: 1/4
    assert fused == {"q": ["y", "x", "w", "z"], "r": ["v"]}
    assert reciprocal_rank_fusion([a, b], k=1, depth=2)["q"] == ["y", "x"]
    assert reciprocal_rank_fusion([{"q": ["x", "x", "y"]}], k=60)["q"] == ["x", "y"]  # duplicates keep the first
    with pytest.raises(ValueError, match="k=0"):
        reciprocal_rank_fusion([a], k=0)


def test_default_metrics_are_the_papers_cut_offs():
    assert DEFAULT_METRICS == ("hits@1", "hits@10", "mrr@3", "mrr@10", "mrr@20")
    run = {"q1": ["a", "b", "c", "d"], "q2": ["x"] * 0 + [f"n{i}" for i in range(12)] + ["y"]}
    qrels = {"q1": {"c": 1}, "q2": {"y": 1}}
    per_query = evaluate_per_query(run, qrels)
    assert per_query["mrr@3"] == {"q1": pytest.approx(1 / 3), "q2": 0.0}
    assert per_query["mrr@20"]["q2"] == pytest.approx(1 / 13) and per_query["mrr@10"]["q2"] == 0.0
    assert evaluate_run(run, qrels)["hits@10"] == 0.5


def test_paired_bootstrap_brackets_the_mean_difference():
    a = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    b = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    diff, lo, hi = paired_bootstrap(a, b, seed=0)
    assert diff == pytest.approx(0.375) and lo <= diff <= hi and lo >= 0.0 and hi <= 0.75
    assert paired_bootstrap(a, b, seed=0) == (diff, lo, hi)  # seeded
    assert paired_bootstrap([1.0, 0.0], [1.0, 0.0]) == (0.0, 0.0, 0.0)  # identical systems: no spread
    with pytest.raises(ValueError, match="equal non-zero lengths"):
        paired_bootstrap([1.0], [1.0, 0.0])


def _descriptions(eds, heldout=None):
    ids = list(eds)
    return Descriptions(doc_ids=ids, eds=[eds[d] for d in ids], candidates=[[eds[d]] for d in ids],
                        scores=[[0.0] for _ in ids], train_queries=[[] for _ in ids],
                        heldout=[(heldout or {}).get(d, []) for d in ids])


def test_query_sets_are_named_and_the_headline_is_labelled_then_titles():
    desc = _descriptions({"a": "cats", "b": "dogs"}, heldout={"a": ["feline"], "b": ["canine"]})
    titles = {"a": "Cat", "b": "Dog"}
    sets = query_sets(desc, titles=titles)
    assert list(sets) == ["titles", "pseudo"] and headline(sets) == "titles"
    assert sets["titles"] == ({"title-a": "Cat", "title-b": "Dog"}, {"title-a": {"a": 1}, "title-b": {"b": 1}})
    labelled = LabelledQueries({"q1": "kittens"}, {"q1": {"a": 1}})
    sets = query_sets(desc, labelled, titles=titles)
    assert list(sets) == ["labelled", "pseudo"] and headline(sets) == "labelled"  # no title set beside real queries
    assert title_queries({"a": "Cat", "b": " "}) is None  # every document needs a title
    assert list(query_sets(desc)) == ["pseudo"]
    with pytest.raises(ValueError, match="no evaluation query"):
        query_sets(_descriptions({"a": "cats"}))


def test_every_system_is_cut_at_the_same_depth_and_fused():
    model, tok = build_tiny_model(TinyModelConfig(seed=5))
    eds = {f"d{i}": f"ed number {i}" for i in range(6)}
    names = ["zero", "one", "two", "three", "four", "five"]
    texts = {f"d{i}": f"document {names[i]} about topic {names[i]} and shared words" for i in range(6)}
    index = SedsiIndex.create(model.eval(), tok, _descriptions(eds), {d: d.upper() for d in eds}, max_input_tokens=32)
    bm25 = BM25Index.build(list(texts), list(texts.values()))
    sets = {"labelled": ({"q1": "topic three shared words", "q2": "document five"}, {"q1": {"d3": 1}, "q2": {"d5": 1}})}
    table, samples, per_query = compare_systems(index, bm25, sets, num_beams=3, batch_size=2, samples=1, fusion_k=60)
    assert list(table["system"]) == ["sedsi", "bm25", "hybrid"] and (table["depth"] == 3).all()
    assert set(per_query["labelled"]) == {"sedsi", "bm25", "hybrid"}
    assert per_query["labelled"]["bm25"]["hits@1"] == {"q1": 1.0, "q2": 1.0}  # BM25 finds both by their words
    assert len(samples) == 1 and len(samples.iloc[0]["hybrid_top3"]) <= 3
    sedsi_run = index.rank(sets["labelled"][0], num_beams=3)
    assert all(len(docs) <= 3 for docs in sedsi_run.values())
    flat = flat_metrics(table)
    assert flat["labelled.bm25.hits_at_1"] == 1.0 and "labelled.hybrid.mrr_at_20" in flat
