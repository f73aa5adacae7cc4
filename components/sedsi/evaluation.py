"""The `sedsi_index` stage's evaluation: SE-DSI and BM25 on the same query sets, one metrics table and
one table of sample queries with both systems' top 3.

Usage::

    sets = query_sets(descriptions, labelled_eval, max_pseudo=None)   # {"pseudo": (queries, qrels), ...}
    table, samples = compare_systems(index, bm25, sets, num_beams=20, batch_size=8, samples=20)
"""

from __future__ import annotations

import pandas as pd

from components.sedsi.bm25 import BM25Index
from components.sedsi.descriptions import Descriptions
from components.sedsi.index import SedsiIndex, as_qrels, heldout_table
from components.sedsi.metrics import evaluate_run

QuerySet = tuple[dict[str, str], dict[str, dict[str, int]]]  # (qid -> query, qid -> {doc_id: grade})


def query_sets(descriptions: Descriptions, labelled=None, max_pseudo: int | None = None) -> dict[str, QuerySet]:
    """The evaluation query sets: held-out pseudo-queries (`pseudo`) and labelled queries (`labelled`)."""
    sets: dict[str, QuerySet] = {}
    heldout = heldout_table(descriptions, max_pseudo)
    if len(heldout):
        sets["pseudo"] = as_qrels(heldout)
    if labelled is not None and labelled.queries:
        sets["labelled"] = (labelled.queries, labelled.qrels)
    if not sets:
        raise ValueError("sedsi_index: no evaluation query (set sedsi.ed.heldout > 0 or give sedsi.queries)")
    return sets


def compare_systems(index: SedsiIndex, bm25: BM25Index, sets: dict[str, QuerySet], num_beams: int,
                    batch_size: int, samples: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, sample_rows = [], []
    for name, (queries, qrels) in sets.items():
        qids = list(queries)
        sedsi_metrics, sedsi_run = index.evaluate(queries, qrels, num_beams, batch_size)
        bm25_hits = bm25.search([queries[q] for q in qids], k=100)
        bm25_run = {q: [d for d, _ in hits] for q, hits in zip(qids, bm25_hits, strict=True)}
        bm25_metrics = evaluate_run(bm25_run, qrels)
        for system, metrics in (("sedsi", sedsi_metrics), ("bm25", bm25_metrics)):
            rows.append({"queries": name, "system": system, "n_queries": len(qrels), **metrics})
        for qid in qids[:samples]:
            relevant = sorted(d for d, g in qrels[qid].items() if g >= 1)
            sample_rows.append({
                "queries": name, "qid": qid, "query": queries[qid], "relevant": relevant,
                "sedsi_top3": [f"{d}: {index.eds[d]}" for d in sedsi_run[qid][:3]],
                "bm25_top3": [f"{d}: {index.titles.get(d, '')}" for d in bm25_run[qid][:3]],
            })
    return pd.DataFrame(rows), pd.DataFrame(sample_rows)
