"""`sedsi`: generative retrieval with Elaborative Descriptions as document ids (components/sedsi)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from semflow.config.base import Section
from semflow.config.models import ModelConfig
from semflow.config.training import TrainerConfig


class EdConfig(Section):
    """Elaborative descriptions: sampled queries per document, the top-1 is the document's identifier."""

    candidates: int = Field(10, gt=0, description="sampled queries per document (paper: 10)")
    top_k: int = Field(10, gt=0, description="sampling top-k (paper: 10)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    max_tokens: int = Field(20, gt=0, description="an ED is at most this many tokens")
    heldout: int = Field(2, ge=0, description="pseudo-queries per document kept out of training for evaluation")
    max_doc_tokens: int = Field(256, gt=0, description="leading document tokens the generator sees")
    batch_size: int = Field(16, gt=0, description="documents decoded together")
    seed: int = Field(0, description="sampling seed")


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


class QueriesConfig(Section):
    """Labelled evaluation queries: JSONL ({qid, query} + {qid, doc_id, relevance}) or TREC topics + qrels."""

    queries: str = Field(description="JSONL with qid and query, or a TREC topics file")
    qrels: str = Field(description="JSONL with qid, doc_id, relevance, or a TREC qrels file (qid 0 doc_id rel)")
    format: Literal["auto", "jsonl", "trec"] = Field("auto", description="auto: from the file contents")
    train_share: float = Field(
        0.0, ge=0, lt=1, description="share of queries (seeded) that also train Query -> ED pairs; the rest evaluate"
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
    max_input_tokens: int = Field(256, gt=0, description="input tokens of a training pair or query")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the indexing loss")
    train: TrainerConfig = Field(TrainerConfig(lr=5e-4, batch_size=8, epochs=10), description="the training loop")
    num_beams: int = Field(20, gt=0, description="constrained beam search width; also the ranking depth")
    search_batch_size: int = Field(8, gt=0, description="queries searched together")
    queries: QueriesConfig | None = Field(None, description="labelled queries and judgements, if any")
    max_eval_queries: int | None = Field(None, gt=0, description="cap on held-out pseudo-queries evaluated")
    samples: int = Field(20, ge=0, description="queries with retrieved documents logged as a table")
    replay_pairs: float = Field(
        1.0, ge=0, description="index add: old pairs replayed per new pair (DSI++-style rehearsal)"
    )
    add_steps: int | None = Field(None, gt=0, description="index add: optimizer steps (default: train's epochs)")
