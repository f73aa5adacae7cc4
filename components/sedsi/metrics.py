"""Ranked-retrieval evaluation for SE-DSI: ED rankings -> document rankings -> Hits@k and MRR@k.

Example::

    ed_to_docs = invert_eds({"d1": "cats purr", "d2": "cats purr", "d3": "dogs bark"})
    ranked = expand_rankings([[("cats purr", -0.1), ("dogs bark", -0.9)]], ed_to_docs)   # [["d1", "d2", "d3"]]
    scores = evaluate_run({"q1": ranked[0]}, {"q1": {"d2": 1}})
    # {"hits@1": 0.0, "hits@10": 1.0, "mrr@3": 0.5, "mrr@10": 0.5, "mrr@20": 0.5}
    per_query = evaluate_per_query(run, qrels)            # metric -> qid -> value (for paired bootstraps)
    paired_bootstrap(a_values, b_values, seed=0)           # (mean of a - b, CI low, CI high)
    collision_rate(ed_to_docs)     # 2/3: d1 and d2 share their ED

Definitions:
- Hits@k is success@k: 1 when at least one relevant document is in the top k (ir-measures "Success@k",
  trec_eval's success_k);
- MRR@k is the reciprocal rank of the FIRST relevant document in the de-duplicated ranking (0 beyond k;
  ir-measures "RR@k", trec_eval's recip_rank with a cut-off). The
  released SE-DSI code keeps the last hit, which can make MRR@3 < Hits@1; this module does not;
- a document is relevant when its qrels grade is >= 1; means are over every query in the qrels, a query with
  nothing retrieved (or absent from the run) counting 0.

The default cut-offs are those the SE-DSI paper reports (Tang et al., KDD 2023, its experiments: Hits@1,
Hits@10, MRR@3, MRR@20) plus MRR@10; every system of a table is cut at the same depth (the beam width) before scoring, so no
cut-off is one that only BM25 reaches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

DEFAULT_METRICS = ("hits@1", "hits@10", "mrr@3", "mrr@10", "mrr@20")


def invert_eds(doc_to_ed: Mapping[str, str]) -> dict[str, list[str]]:
    """ED -> its documents (sorted doc ids), from doc id -> ED."""
    ed_to_docs: dict[str, list[str]] = {}
    for doc_id, ed in doc_to_ed.items():
        ed_to_docs.setdefault(ed, []).append(doc_id)
    return {ed: sorted(docs) for ed, docs in ed_to_docs.items()}


def expand_rankings(
    ranked_eds: Sequence[Sequence[tuple[str, float] | str]], ed_to_docs: Mapping[str, Sequence[str]],
    unknown: str = "skip",
) -> list[list[str]]:
    """Per query, the ranked EDs (best first; (ed, score) pairs or bare EDs) as a ranked document list.

    List order is the rank; scores are not re-sorted. An ED of several documents puts all of them, sorted by
    doc id, at consecutive ranks where the ED stood; a document already listed is not repeated (its first
    rank wins). An ED that names no document (an unconstrained decoder can invent one) is dropped with
    unknown="skip", or raises KeyError with unknown="error"."""
    if unknown not in ("skip", "error"):
        raise ValueError(f"unknown={unknown!r} must be 'skip' or 'error'")
    expanded = []
    for q, ranking in enumerate(ranked_eds):
        seen: set[str] = set()
        docs: list[str] = []
        for item in ranking:
            ed = item if isinstance(item, str) else item[0]
            if ed not in ed_to_docs:
                if unknown == "error":
                    raise KeyError(f"query #{q}: ED {ed!r} names no document")
                continue
            for doc_id in sorted(ed_to_docs[ed]):
                if doc_id not in seen:
                    seen.add(doc_id)
                    docs.append(doc_id)
        expanded.append(docs)
    return expanded


def evaluate_run(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Mean of each metric over the queries of `qrels`, for `run`: qid -> doc ids, best first
    (see `evaluate_per_query`)."""
    per_query = evaluate_per_query(run, qrels, metrics)
    return {name: sum(values.values()) / len(values) for name, values in per_query.items()}


def evaluate_per_query(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, dict[str, float]]:
    """metric -> qid -> value over the queries of `qrels`, for `run`: qid -> doc ids, best first.

    Metric names: "hits@k" (success@k) and "mrr@k" as defined in the module docstring; other names go to
    ir-measures as they are (e.g. "nDCG@10", "R@100"). Duplicates in a ranking keep their first rank. Raises
    ValueError for a query whose qrels hold no relevant document, or for run queries that have no qrels."""
    if not qrels:
        raise ValueError("qrels are empty: no query to evaluate")
    for qid, judged in qrels.items():
        if not any(grade >= 1 for grade in judged.values()):
            raise ValueError(f"query {qid!r} has no relevant document in the qrels (grade >= 1)")
    extra = [qid for qid in run if qid not in qrels]
    if extra:
        raise ValueError(f"{len(extra)} run queries have no qrels (first: {extra[:5]})")

    # trec_eval reads scores, not ranks (and breaks ties by doc id): strictly decreasing scores n, n-1, ...
    # keep the given order and never tie; de-duplicating first keeps the first rank (a dict would keep the
    # last score written).
    ranked = {qid: list(dict.fromkeys(run.get(qid, ()))) for qid in qrels}
    scored = {qid: {doc: float(len(docs) - r) for r, doc in enumerate(docs)} for qid, docs in ranked.items() if docs}
    per_query = {name: dict.fromkeys(qrels, 0.0) for name in metrics}
    if scored:
        for name, values in _per_query(scored, {qid: dict(qrels[qid]) for qid in scored}, metrics).items():
            per_query[name].update(values)
    return per_query


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """(mean of a - b, CI low, CI high): scipy's paired percentile bootstrap over queries (resampling query
    indices, the same for both systems)."""
    import numpy as np
    from scipy.stats import bootstrap

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired samples need equal non-zero lengths, got {a.size} and {b.size}")
    diff = float(np.mean(a - b))
    if a.size == 1 or np.all(a - b == (a - b)[0]):
        return diff, diff, diff  # no spread to resample
    res = bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                    n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                    random_state=np.random.default_rng(seed))
    return diff, float(res.confidence_interval.low), float(res.confidence_interval.high)


def collision_rate(ed_to_docs: Mapping[str, Sequence[str]]) -> float:
    """Share of documents whose ED is shared with at least one other document (each document of a shared ED
    counts, so two documents on one ED among ten give 0.2). Documents are counted once each."""
    docs = {doc for members in ed_to_docs.values() for doc in members}
    if not docs:
        raise ValueError("no document: the ED -> documents mapping is empty")
    shared = {doc for members in ed_to_docs.values() if len(set(members)) > 1 for doc in members}
    return len(shared) / len(docs)


def _per_query(run: dict, qrels: dict, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """metric name -> qid -> value, computed by ir-measures (pytrec_eval: trec_eval's own code)."""
    import ir_measures

    names = {name: ir_measures.parse_measure(_ir_name(name)) for name in metrics}
    values: dict[str, dict[str, float]] = {name: {} for name in metrics}
    by_measure = {measure: name for name, measure in names.items()}
    for metric in ir_measures.iter_calc(list(names.values()), qrels, run):
        values[by_measure[metric.measure]][metric.query_id] = float(metric.value)
    return values


def _ir_name(name: str) -> str:
    if name.startswith("hits@"):
        return "Success@" + name[len("hits@"):]
    if name.startswith("mrr@"):
        return "RR@" + name[len("mrr@"):]
    return name
