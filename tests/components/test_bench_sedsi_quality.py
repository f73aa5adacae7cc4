"""The Cranfield benchmark's evaluation set (bench/bench_sedsi_quality.py): which queries evaluate, judged on
which documents. Synthetic qrels with a known answer; the benchmark's data never enters the tests."""

import importlib.util

from semflow.caching import REPO_ROOT

spec = importlib.util.spec_from_file_location("bench_sedsi_quality", REPO_ROOT / "bench" / "bench_sedsi_quality.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

QUERIES = {"1": "a", "2": "b", "3": "c", "4": "d", "5": "e"}
QRELS = {"1": {"10": 1, "11": 3}, "2": {"11": 2, "12": 4}, "3": {"13": 1}, "4": {"12": 3}, "5": {"10": 2, "14": 1}}


def test_other_queries_are_the_unsampled_ones_judged_inside_the_collection():
    picked = {"1": "a"}
    others, rel = bench.other_queries(QUERIES, QRELS, picked, ["10", "11", "12"], max_grade=2)
    # 1 was sampled; 3 and 4 have no relevant document (grade <= 2) inside; 5's doc 14 is outside the collection
    assert others == {"2": "b", "5": "e"}
    assert rel == {"2": {"11": 1}, "5": {"10": 1}}


def test_sampled_collection_holds_every_relevant_document_and_the_distractors():
    docs = {d: ("t", "x") for d in ("10", "11", "12", "13", "14", "15")}
    doc_ids, picked, relevant = bench.sample_collection(docs, QUERIES, QRELS, 2, 1, max_grade=2, seed=0)
    assert len(picked) == 2 and set(picked) <= set(QUERIES)
    wanted = {d for rel in relevant.values() for d in rel}
    assert wanted <= set(doc_ids) and len(doc_ids) == len(wanted) + 1
    others, rel = bench.other_queries(QUERIES, QRELS, picked, doc_ids, max_grade=2)
    assert not set(others) & set(picked)
    assert all(d in doc_ids for r in rel.values() for d in r)
