"""One SE-DSI index built and measured: the `sedsi_index` stage's work without its I/O, and the Cranfield
benchmark's inner loop (bench/bench_sedsi_quality.py).

Steps: labelled queries read and split first (bad input fails before any model work); the paper's pairs
(SE-DSI, Tang et al., KDD 2023, arXiv 2305.15115, Sec. 3.4: document, passage and sentence rehearsal
contents -> ED, plus labelled training queries; with `sedsi.pairs: dsi_qg` also the pseudo-queries, as
DSI-QG, Zhuang et al. 2022, indexes); training with the shared Trainer; then SE-DSI, BM25 (over the
document text, the input SE-DSI learns) and their reciprocal-rank fusion on every query set
(components.sedsi.evaluation).

    built = build_index(model, tokenizer, doc_ids, texts, titles, descriptions, sedsi_cfg, "ckpt")
    built.table        # queries x system x metric
    built.metrics      # flat: "labelled.sedsi.hits_at_1", "ed.generic_share", "pairs.query", ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.sedsi.bm25 import BM25Index
from components.sedsi.descriptions import Descriptions
from components.sedsi.evaluation import compare_systems, flat_metrics, headline, labelled_split, query_sets
from components.sedsi.index import SedsiIndex, heldout_table, train_index
from components.sedsi.training import IndexPair, build_pairs, pair_counts


@dataclass
class Built:
    index: SedsiIndex
    pairs: list[IndexPair]
    table: pd.DataFrame
    samples: pd.DataFrame
    per_query: dict
    history: pd.DataFrame
    metrics: dict[str, float]
    headline: str  # the query set the metrics lead with


def build_index(model, tokenizer, doc_ids: list[str], texts: list[str], titles: dict[str, str],
                descriptions: Descriptions, sedsi, ckpt_dir: str | Path, *, lineage: list[dict] | None = None,
                on_log=None, progress: bool = True, eval_sets: dict | None = None) -> Built:
    """Train an index over the documents under `sedsi` (a SedsiConfig) and evaluate it beside BM25: on the
    query sets `sedsi` names, or on `eval_sets` (name -> (queries, qrels)) when given."""
    split = labelled_split(sedsi.queries, doc_ids, seed=sedsi.train.seed)
    pairs = build_pairs(doc_ids, texts, descriptions, sedsi.rehearsal, seed=sedsi.train.seed,
                        queries=split.train_queries, pseudo_queries=sedsi.pairs == "dsi_qg")
    index = SedsiIndex.create(model, tokenizer, descriptions, titles, sedsi.max_input_tokens, lineage=lineage,
                              length_penalty=sedsi.length_penalty)
    result = train_index(index, pairs, sedsi.train, Path(ckpt_dir), sedsi.label_smoothing, on_log=on_log,
                         progress=progress)
    sets = eval_sets if eval_sets is not None else query_sets(descriptions, split.evaluate, sedsi.max_eval_queries,
                                                              titles=titles if sedsi.title_queries else None)
    bm25 = BM25Index.build(doc_ids, texts)
    table, samples, per_query = compare_systems(index, bm25, sets, sedsi.num_beams, sedsi.search_batch_size,
                                                sedsi.samples, sedsi.fusion_k)
    counts, n = pair_counts(pairs), len(doc_ids)
    metrics = {
        "documents": float(n),
        "ed.mean_tokens": sum(len(index.encoder.ed_ids(e)) - 1 for e in descriptions.eds) / n,
        "ed.collision_rate": descriptions.collision_rate,
        "ed.generic_share": descriptions.generic_share,
        "rc.passages_per_doc": counts["passage"] / n,
        "rc.sentences_per_doc": counts["sentence"] / n,
        **{f"pairs.{kind}": float(c) for kind, c in counts.items()},
        "queries.train": float(split.train_count),
        "train.steps": float(result.steps),
        "train.resumed_from_step": float(result.resumed_from),
        "train.tokens_per_second": result.tokens / result.seconds if result.seconds else 0.0,
        **{f"queries_skipped.{k}": float(v) for k, v in split.skipped.items()},
        **{f"{name}.queries": float(len(qrels)) for name, (_, qrels) in sets.items()},
        **flat_metrics(table),
    }
    return Built(index, pairs, table, samples, per_query, pd.DataFrame(result.history), metrics, headline(sets))


def eval_table(descriptions: Descriptions, limit: int | None = None) -> pd.DataFrame:
    """The held-out pseudo-queries saved with the index (incremental indexing measures forgetting on them)."""
    return heldout_table(descriptions, limit)
