"""The `sedsi_index` stage's evaluation: which queries train and which evaluate, then SE-DSI, BM25 and their
reciprocal-rank fusion on the same query sets, cut at the same depth, in one metrics table.

Query sets, each evaluated separately and named in every metric (`<set>.<system>.<metric>`):
- `labelled`: the evaluation share of `sedsi.queries` (real queries with judgements): the headline;
- `titles`: without labelled queries, each document's title as a query whose one relevant document is that
  document. Titles never train the index (its inputs are the document text, its rehearsal contents and
  labelled queries), and BM25 indexes the text only, so neither system has seen the query;
- `pseudo`: the generator's held-out pseudo-queries (paraphrases of the ED's own sampling; BM25 never saw
  its siblings): recall of the teacher's queries, not of real ones, always labelled `pseudo.*`.

Usage::

    split = labelled_split(sedsi.queries, doc_ids, seed=0)              # train queries per doc + eval set
    sets = query_sets(descriptions, split.evaluate, titles=titles)     # {"labelled": (queries, qrels), ...}
    table, samples, per_query = compare_systems(index, bm25, sets, num_beams=20, batch_size=8, samples=20)
    metrics = flat_metrics(table)                                      # {"labelled.sedsi.hits_at_1": ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from components.sedsi.bm25 import BM25Index
from components.sedsi.descriptions import Descriptions
from components.sedsi.fusion import reciprocal_rank_fusion
from components.sedsi.index import SedsiIndex, as_qrels, heldout_table
from components.sedsi.metrics import DEFAULT_METRICS, evaluate_per_query

QuerySet = tuple[dict[str, str], dict[str, dict[str, int]]]  # (qid -> query, qid -> {doc_id: grade})
SYSTEMS = ("sedsi", "bm25", "hybrid")
HEADLINE_ORDER = ("labelled", "titles", "pseudo")
QUERY_SET_NOTES = {  # what each query set measures, in one phrase (the CLI's summary line names it)
    "labelled": "the evaluation share of sedsi.queries (real queries with judgements)",
    "titles": "each document's title as its query (titles never train the index; BM25 indexes the text)",
    "pseudo": "held-out pseudo-queries (sampled by the ED generator beside each ED: recall of its own paraphrases)",
}


@dataclass
class LabelledSplit:
    train_queries: dict[str, list[str]] = field(default_factory=dict)  # doc id -> training query texts
    evaluate: object | None = None  # LabelledQueries (components.sedsi.queries) or None
    skipped: dict[str, int] = field(default_factory=dict)
    train_count: int = 0


def labelled_split(queries_cfg, doc_ids: list[str], seed: int) -> LabelledSplit:
    """Read `sedsi.queries` (a QueriesConfig, or None) against the collection and split it: the training
    share becomes Query -> ED pairs for every relevant (grade >= 1) document, the rest evaluates."""
    if queries_cfg is None:
        return LabelledSplit()
    from components.sedsi.queries import load_queries, split_queries

    q = queries_cfg
    labelled = load_queries(q.queries, q.qrels, set(doc_ids), format=q.format, on_unknown_doc=q.on_unknown_doc)
    train, evaluate = split_queries(labelled, q.train_share, seed=seed)
    per_doc: dict[str, list[str]] = {}
    for qid, text in train.queries.items():
        for doc_id, grade in train.qrels[qid].items():
            if grade >= 1:
                per_doc.setdefault(doc_id, []).append(text)
    return LabelledSplit(per_doc, evaluate if len(evaluate) else None, labelled.skipped, len(train))


def title_queries(titles: dict[str, str]) -> QuerySet | None:
    """Each document's title as a query for it, when every document has a non-blank title."""
    if not titles or any(not str(t).strip() for t in titles.values()):
        return None
    queries = {f"title-{d}": str(t).strip() for d, t in titles.items()}
    return queries, {f"title-{d}": {d: 1} for d in titles}


def query_sets(descriptions: Descriptions, labelled=None, max_pseudo: int | None = None,
               titles: dict[str, str] | None = None) -> dict[str, QuerySet]:
    """The evaluation query sets, headline first: `labelled`, else `titles` (when given), then `pseudo`."""
    sets: dict[str, QuerySet] = {}
    if labelled is not None and labelled.queries:
        sets["labelled"] = (labelled.queries, labelled.qrels)
    elif titles is not None and (by_title := title_queries(titles)) is not None:
        sets["titles"] = by_title
    heldout = heldout_table(descriptions, max_pseudo)
    if len(heldout):
        sets["pseudo"] = as_qrels(heldout)
    if not sets:
        raise ValueError("sedsi_index: no evaluation query (set sedsi.ed.heldout > 0, give sedsi.queries, or "
                         "documents with titles and sedsi.title_queries)")
    return sets


def headline(sets) -> str:
    """The query set the summary leads with: labelled, else titles, else pseudo."""
    return next(name for name in HEADLINE_ORDER if name in sets)


def compare_systems(index: SedsiIndex, bm25: BM25Index, sets: dict[str, QuerySet], num_beams: int,
                    batch_size: int, samples: int, fusion_k: int = 60,
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, dict[str, dict[str, float]]]]]:
    """(metrics table, sample queries, per-query values): SE-DSI, BM25 and their RRF hybrid per query set,
    every ranking cut at `num_beams` documents (the depth SE-DSI reaches). per_query is
    set -> system -> metric -> qid -> value (for paired bootstraps)."""
    rows, sample_rows, per_query = [], [], {}
    for name, (queries, qrels) in sets.items():
        qids = list(queries)
        runs = {"sedsi": index.rank(queries, num_beams, batch_size)}
        bm25_hits = bm25.search([queries[q] for q in qids], k=num_beams)
        runs["bm25"] = {q: [d for d, _ in hits] for q, hits in zip(qids, bm25_hits, strict=True)}
        runs["hybrid"] = reciprocal_rank_fusion([runs["sedsi"], runs["bm25"]], k=fusion_k, depth=num_beams)
        per_query[name] = {}
        for system in SYSTEMS:
            values = evaluate_per_query(runs[system], qrels)
            per_query[name][system] = values
            means = {m: sum(v.values()) / len(v) for m, v in values.items()}
            rows.append({"queries": name, "system": system, "n_queries": len(qrels), "depth": num_beams, **means})
        for qid in qids[:samples]:
            relevant = sorted(d for d, g in qrels[qid].items() if g >= 1)
            sample_rows.append({
                "queries": name, "qid": qid, "query": queries[qid], "relevant": relevant,
                "sedsi_top3": [f"{d}: {index.eds[d]}" for d in runs["sedsi"][qid][:3]],
                "bm25_top3": [f"{d}: {index.titles.get(d, '')}" for d in runs["bm25"][qid][:3]],
                "hybrid_top3": runs["hybrid"][qid][:3],
            })
    return pd.DataFrame(rows), pd.DataFrame(sample_rows), per_query


def flat_metrics(table: pd.DataFrame, metrics=DEFAULT_METRICS) -> dict[str, float]:
    """`<queries>.<system>.<metric>` -> value (MLflow keys allow no "@": hits@10 is hits_at_10)."""
    return {f"{row['queries']}.{row['system']}.{m.replace('@', '_at_')}": float(row[m])
            for row in table.to_dict("records") for m in metrics}
