"""Reciprocal-rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): the hybrid of SE-DSI and BM25.

    score(d) = sum over systems s of 1 / (k + rank_s(d))      (rank from 1; k = 60 in the paper)

A document missing from a system's ranking gets nothing from it. Ties keep the order of first appearance
(system order, then rank), so the fusion is deterministic.

    fused = reciprocal_rank_fusion([{"q1": ["a", "b"]}, {"q1": ["b", "c"]}], k=60, depth=20)
    # {"q1": ["b", "a", "c"]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def reciprocal_rank_fusion(runs: Sequence[Mapping[str, Sequence[str]]], k: int = 60,
                           depth: int | None = None) -> dict[str, list[str]]:
    """qid -> fused ranking of the runs' documents (best first), cut to `depth` when given."""
    if k <= 0:
        raise ValueError(f"the fusion constant k={k} must be > 0")
    if not runs:
        raise ValueError("no ranking to fuse")
    qids = list(dict.fromkeys(q for run in runs for q in run))
    fused: dict[str, list[str]] = {}
    for qid in qids:
        scores: dict[str, float] = {}
        for run in runs:
            for rank, doc in enumerate(dict.fromkeys(run.get(qid, ())), start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
        order = sorted(scores, key=lambda d: -scores[d])  # stable: first appearance breaks ties
        fused[qid] = order[:depth] if depth is not None else order
    return fused
