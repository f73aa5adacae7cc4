"""`sedsi`: generative retrieval with Elaborative Descriptions as document ids (components/sedsi).

These models are the only home of SE-DSI's defaults: components/sedsi takes `EdConfig` and
`RehearsalConfig` as its settings (`EdSettings`, `RehearsalSettings` are the same classes).
Paper: Tang et al., "Semantic-Enhanced Differentiable Search Index Inspired by Learning Strategies",
KDD 2023, arXiv 2305.15115 (ED: Sec. 3.2, rehearsal contents: Sec. 3.3, training and inference: Sec. 3.4).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from semflow.config.base import Section
from semflow.config.models import ModelConfig
from semflow.config.training import TrainerConfig

ED_PROMPTS = ("plain", "few_shot")
ED_SCORERS = ("mean_logprob", "specificity")
REHEARSAL_STYLES = ("leading", "summary", "random")


class EdConfig(Section):
    """Elaborative descriptions: sampled queries per document, the best one is the document's identifier."""

    candidates: int = Field(10, gt=0, description="sampled queries per document (paper: 10)")
    top_k: int = Field(10, gt=0, description="sampling top-k (paper: 10)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    max_tokens: int = Field(20, gt=0, description="an ED is at most this many tokens")
    heldout: int = Field(2, ge=0, description="pseudo-queries per document kept for the pseudo.* evaluation")
    max_doc_tokens: int = Field(256, gt=0, description="leading document tokens the generator sees")
    batch_size: int = Field(
        30, gt=0, description="sampled queries decoded together (documents per batch: batch_size // candidates, "
        "at least 1; each document's prompt is run once for all its candidates)")
    seed: int = Field(0, description="sampling seed")
    prompt: Literal["plain", "few_shot"] = Field(
        "few_shot", description="plain: the instruction and the document; few_shot: one worked example first (chosen "
        "by measurement on Cranfield: fewer instruction echoes and assistant replies; bench/results/sedsi.md)"
    )
    scorer: Literal["mean_logprob", "specificity"] = Field(
        "specificity", description="how candidates are ranked: mean_logprob (the generator's mean token "
        "log-prob, the paper's choice) or specificity (log p(q|doc) - log p(q), pointwise mutual information)"
    )
    filter_generic: bool = Field(
        True, description="a candidate sharing no content word with its document, or assistant boilerplate, "
        "is never the ED while another candidate is left (a deviation from the paper, measured)"
    )


class RehearsalConfig(Section):
    """Rehearsal contents: passages of `passage_size` sentences (stride `passage_stride`) and sentences."""

    style: Literal["leading", "summary", "random"] = Field(
        "leading", description="leading: first passages/sentences; summary: TextRank; random: ablation"
    )
    passages: int = Field(3, ge=0, description="leading/random: passages kept (paper: 3)")
    sentences: int = Field(6, ge=0, description="leading/random: sentences kept (paper: 6)")
    passage_size: int = Field(5, gt=0, description="sentences per passage")
    passage_stride: int = Field(2, gt=0, description="sentences between passage starts (<= passage_size)")
    summary_passages: int = Field(1, ge=0, description="summary: top TextRank passages (paper: 1)")
    summary_sentences: int = Field(6, ge=0, description="summary: top TextRank sentences (paper: 6)")

    @model_validator(mode="after")
    def _stride_within_size(self):
        if self.passage_stride > self.passage_size:
            raise ValueError(f"passage stride={self.passage_stride} must be in 1..size={self.passage_size} so "
                             "that no sentence is skipped")
        return self

    def counts(self) -> tuple[int, int]:
        """(passages, sentences) kept under this style."""
        if self.style == "summary":
            return self.summary_passages, self.summary_sentences
        return self.passages, self.sentences


class QueriesConfig(Section):
    """Labelled queries: JSONL ({qid, query} + {qid, doc_id, relevance}) or TREC topics + qrels."""

    queries: str = Field(description="JSONL with qid and query, or a TREC topics file")
    qrels: str = Field(description="JSONL with qid, doc_id, relevance, or a TREC qrels file (qid 0 doc_id rel)")
    format: Literal["auto", "jsonl", "trec"] = Field("auto", description="auto: from the file contents")
    train_share: float = Field(
        0.0, ge=0, lt=1, description="share of queries (seeded) that train Query -> ED pairs (the paper's "
        "labelled-query pairs); the rest evaluate. 0: zero-shot (indexing pairs only)"
    )
    on_unknown_doc: Literal["fail", "skip"] = Field(
        "fail", description="qrels naming a document not in the collection: fail, or skip and count"
    )


class SedsiConfig(Section):
    """SE-DSI generative retrieval over data.documents (components/sedsi)."""

    enabled: bool = Field(True, description="run describe_documents and sedsi_index")
    backbone: ModelConfig | None = Field(
        None, description="None: the distilled student; else any causal or seq2seq model spec"
    )
    ed: EdConfig = Field(EdConfig(), description="Elaborative Description generation")
    rehearsal: RehearsalConfig = Field(RehearsalConfig(), description="rehearsal contents per document")
    pairs: Literal["sedsi", "dsi_qg"] = Field(
        "sedsi", description="sedsi: the paper's mix (Sec. 3.4): document, passage and sentence RCs -> ED, plus "
        "labelled training queries; dsi_qg: also the generator's pseudo-queries as `Query: q -> ED` pairs (the "
        "DSI-QG recipe, Zhuang et al. 2022)"
    )
    max_input_tokens: int = Field(256, gt=0, description="input tokens of a training pair or query")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the indexing loss")
    train: TrainerConfig = Field(TrainerConfig(lr=5e-4, batch_size=8, epochs=10), description="the training loop")
    num_beams: int = Field(20, gt=0, description="constrained beam search width; also the ranking depth of "
                           "every system in the metrics table (BM25 and the hybrid are cut there too)")
    length_penalty: float = Field(
        1.0, description="EDs ranked by sum log-prob / length ** length_penalty, as `generate` does (1.0: "
        "its default, the reference's setting; 0: plain sums)"
    )
    search_batch_size: int = Field(8, gt=0, description="queries searched together")
    queries: QueriesConfig | None = Field(None, description="labelled queries and judgements, if any")
    title_queries: bool = Field(
        True, description="without labelled queries: each document's title is an evaluation query for it (titles "
        "never train the index, and BM25 indexes the text only); the `titles.*` metrics"
    )
    fusion_k: int = Field(60, gt=0, description="reciprocal-rank fusion constant of the hybrid (Cormack et al. 2009)")
    max_eval_queries: int | None = Field(None, gt=0, description="cap on held-out pseudo-queries evaluated")
    samples: int = Field(20, ge=0, description="queries with retrieved documents logged as a table")
    replay_pairs: float = Field(
        1.0, ge=0, description="index add: old pairs replayed per new pair (DSI++-style rehearsal)"
    )
    add_steps: int | None = Field(None, gt=0, description="index add: optimizer steps (default: train's epochs)")
