"""An SE-DSI index: the trained model, the prefix trie over EDs and the ED -> documents map, as one folder.

Build, evaluate, search and extend it:

    index = SedsiIndex.create(model, tokenizer, descriptions, titles, max_input_tokens=256)
    result = train_index(index, pairs, TrainerConfig(), ckpt_dir)     # components.training.trainer.Trainer
    hits = index.search(["who wrote the origin of species"], k=10)   # [[Hit(doc_id, title, ed, score), ...]]
    index.save("run/index"); SedsiIndex.load("run/index")

Folder layout (`save`): `model/` (weights as safetensors + tokenizer), `trie.safetensors` (the trie's
tensors), `index.json` (documents: id, title, ED; the backbone kind and input length; the build's lineage),
and, when given, `pairs.parquet` (training pairs, replayed by incremental indexing) and
`eval_queries.parquet` (qid, query, doc_id: the held-out queries, to measure forgetting).

Retrieval (SE-DSI, Tang et al., KDD 2023, arXiv 2305.15115, Sec. 3.4): `num_beams`-wide beam search
constrained by the trie returns the EDs the model ranks highest (summed token log-probabilities divided by
length ** `length_penalty`, as `generate` ranks them; the index keeps the value it was built with and
`search` takes another); each ED expands to its documents (an ED shared by several documents
returns them all, sorted by id, at consecutive ranks) and the document list is de-duplicated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from components.sedsi.descriptions import Descriptions
from components.sedsi.metrics import evaluate_run, expand_rankings, invert_eds
from components.sedsi.retrieve import constrained_search
from components.sedsi.training import IdEncoder, IndexPair, index_loss_fn
from components.sedsi.trie import IdTrie

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Hit:
    doc_id: str
    title: str
    ed: str
    score: float  # the ED's log-probability given the query


@dataclass
class SedsiIndex:
    model: object
    tokenizer: object
    encoder: IdEncoder
    doc_ids: list[str]
    titles: dict[str, str]
    eds: dict[str, str]  # doc id -> ED
    trie: IdTrie
    lineage: list[dict] = field(default_factory=list)  # one record per build / add
    length_penalty: float = 1.0  # the default ranking of `search` (components.sedsi.decoding)

    # --------------------------------------------------------------------------------- building
    @classmethod
    def create(cls, model, tokenizer, descriptions: Descriptions, titles: dict[str, str], max_input_tokens: int = 256,
               lineage: list[dict] | None = None, length_penalty: float = 1.0) -> SedsiIndex:
        encoder = IdEncoder(tokenizer, bool(model.config.is_encoder_decoder), max_input_tokens)
        eds = dict(zip(descriptions.doc_ids, descriptions.eds, strict=True))
        trie = IdTrie.build(sorted({tuple(encoder.ed_ids(ed)) for ed in eds.values()}), encoder.eos_id)
        return cls(model, tokenizer, encoder, list(descriptions.doc_ids), dict(titles), eds, trie, list(lineage or []),
                   length_penalty)

    def extended(self, descriptions: Descriptions, titles: dict[str, str]) -> SedsiIndex:
        """The same model with more documents: their EDs join the map and the trie."""
        clash = [d for d in descriptions.doc_ids if d in self.eds]
        if clash:
            raise ValueError(f"{len(clash)} documents are already indexed (first: {clash[:5]})")
        eds = {**self.eds, **dict(zip(descriptions.doc_ids, descriptions.eds, strict=True))}
        new = [tuple(self.encoder.ed_ids(ed)) for ed in descriptions.eds]
        fresh = sorted(set(new) - {tuple(s) for s in self.trie.sequences()})
        trie = self.trie.extend(fresh) if fresh else self.trie
        return SedsiIndex(self.model, self.tokenizer, self.encoder, self.doc_ids + list(descriptions.doc_ids),
                          {**self.titles, **titles}, eds, trie, list(self.lineage), self.length_penalty)

    # The maps below are derived once per index: an index never changes its EDs (`extended` makes a new one).
    @cached_property
    def ed_to_docs(self) -> dict[str, list[str]]:
        return invert_eds(self.eds)

    @cached_property
    def _ed_of_ids(self) -> dict[tuple[int, ...], str]:
        return {tuple(self.encoder.ed_ids(ed)): ed for ed in set(self.eds.values())}

    # -------------------------------------------------------------------------------- retrieval
    def search_eds(self, queries: list[str], num_beams: int = 20, batch_size: int = 8,
                   kind: str = "query", length_penalty: float | None = None) -> list[list[tuple[str, float]]]:
        """Per query, the decoded EDs (text, length-normalised log-probability), best first."""
        inputs = [self.encoder.input_ids(kind, q) for q in queries]
        lp = self.length_penalty if length_penalty is None else length_penalty
        found = constrained_search(self.model, self.tokenizer, inputs, self.trie, num_beams=num_beams,
                                   k=num_beams, batch_size=batch_size, length_penalty=lp)
        return [[(self._ed_of_ids[tuple(ids)], float(score)) for ids, score in hits] for hits in found]

    def search(self, queries: list[str], k: int = 10, num_beams: int = 20, batch_size: int = 8,
               length_penalty: float | None = None) -> list[list[Hit]]:
        ranked = self.search_eds(queries, num_beams=num_beams, batch_size=batch_size, length_penalty=length_penalty)
        ed_to_docs, out = self.ed_to_docs, []
        for hits in ranked:
            score_of = dict(hits)
            docs = expand_rankings([hits], ed_to_docs)[0][:k]
            out.append([Hit(d, self.titles.get(d, ""), self.eds[d], score_of[self.eds[d]]) for d in docs])
        return out

    def rank(self, queries: dict[str, str], num_beams: int = 20, batch_size: int = 8) -> dict[str, list[str]]:
        """qid -> ranked doc ids (the EDs' documents, de-duplicated), at most `num_beams` documents each."""
        qids = list(queries)
        ranked = self.search_eds([queries[q] for q in qids], num_beams=num_beams, batch_size=batch_size)
        return {q: docs[:num_beams] for q, docs in zip(qids, expand_rankings(ranked, self.ed_to_docs), strict=True)}

    def evaluate(self, queries: dict[str, str], qrels: dict[str, dict[str, int]], num_beams: int = 20,
                 batch_size: int = 8) -> tuple[dict[str, float], dict[str, list[str]]]:
        """(metrics, run): components.sedsi.metrics.DEFAULT_METRICS over `qrels`, and each query's ranking."""
        run = self.rank(queries, num_beams, batch_size)
        return evaluate_run(run, qrels), run

    # -------------------------------------------------------------------------------- persisting
    def save(self, folder: str | Path, pairs: list[IndexPair] | None = None,
             eval_queries: pd.DataFrame | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder / "model")  # safetensors
        self.tokenizer.save_pretrained(folder / "model")
        save_file({k: v.contiguous() for k, v in self.trie.to("cpu").state_dict().items()}, str(folder / "trie.safetensors"))
        meta = {
            "format": FORMAT_VERSION,
            "is_encoder_decoder": self.encoder.is_encoder_decoder,
            "max_input_tokens": self.encoder.max_input_tokens,
            "length_penalty": self.length_penalty,
            "documents": [{"doc_id": d, "title": self.titles.get(d, ""), "ed": self.eds[d]} for d in self.doc_ids],
            "lineage": self.lineage,
        }
        (folder / "index.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        if pairs is not None:
            pd.DataFrame([p.__dict__ for p in pairs], columns=["kind", "text", "ed", "doc_id"]).to_parquet(
                folder / "pairs.parquet", index=False)
        if eval_queries is not None:
            eval_queries.to_parquet(folder / "eval_queries.parquet", index=False)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> SedsiIndex:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        folder = Path(folder)
        meta_file = folder / "index.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{folder} is not an SE-DSI index: {meta_file.name} is missing")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: index format {meta.get('format')!r}, this code reads {FORMAT_VERSION}")
        config = AutoConfig.from_pretrained(folder / "model")
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(folder / "model").to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder / "model")
        encoder = IdEncoder(tokenizer, meta["is_encoder_decoder"], meta["max_input_tokens"])
        trie = IdTrie.from_state_dict(load_file(str(folder / "trie.safetensors")))
        docs = meta["documents"]
        return cls(model, tokenizer, encoder, [d["doc_id"] for d in docs], {d["doc_id"]: d["title"] for d in docs},
                   {d["doc_id"]: d["ed"] for d in docs}, trie, meta.get("lineage", []),
                   float(meta.get("length_penalty", 0.0)))  # indexes written before the option ranked by sums

    @staticmethod
    def load_pairs(folder: str | Path) -> list[IndexPair]:
        frame = pd.read_parquet(Path(folder) / "pairs.parquet")
        return [IndexPair(**row) for row in frame.to_dict("records")]


def train_index(index: SedsiIndex, pairs: list[IndexPair], cfg, ckpt_dir: str | Path, label_smoothing: float = 0.1,
                on_log=None, progress: bool = True, max_steps: int | None = None):
    """Train the index's model on the pairs with the shared Trainer (checkpoints, resume, logging)."""
    from components.distill.losses import IGNORE
    from components.training.trainer import Trainer

    if not pairs:
        raise ValueError("no training pair: the document set is empty")
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": max_steps})
    examples = [index.encoder.example(p) for p in pairs]
    trainer = Trainer(index.model, index_loss_fn(index.model, label_smoothing), examples, index.encoder.collate, cfg,
                      ckpt_dir, on_log=on_log, progress=progress,
                      loss_weight=lambda batch: (batch["labels"] != IGNORE).sum())  # ED tokens: exact under DDP
    result = trainer.train()
    index.model.eval()
    return result


def heldout_table(descriptions: Descriptions, limit: int | None = None) -> pd.DataFrame:
    """The held-out pseudo-queries as an evaluation table (qid, query, doc_id), at most `limit` rows."""
    rows = [{"qid": f"pq-{doc_id}-{i}", "query": q, "doc_id": doc_id}
            for doc_id, held in zip(descriptions.doc_ids, descriptions.heldout, strict=True)
            for i, q in enumerate(held)]
    frame = pd.DataFrame(rows, columns=["qid", "query", "doc_id"])
    if limit is not None and len(frame) > limit:
        step = len(frame) / limit  # an even spread over documents rather than the first ones
        frame = frame.iloc[[math.floor(i * step) for i in range(limit)]].reset_index(drop=True)
    return frame


def as_qrels(table: pd.DataFrame) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """(queries, qrels) of an evaluation table with one relevant document per query."""
    queries = dict(zip(table["qid"], table["query"], strict=True))
    qrels = {qid: {doc: 1} for qid, doc in zip(table["qid"], table["doc_id"], strict=True)}
    return queries, qrels


@dataclass
class AddResult:
    index: SedsiIndex
    pairs: list[IndexPair]  # every pair the grown index was trained on so far: old + new
    eval_queries: pd.DataFrame  # old held-out queries + the new documents'
    report: dict[str, float]
    train: object  # TrainResult


def add_documents(index: SedsiIndex, old_pairs: list[IndexPair], old_eval: pd.DataFrame, descriptions: Descriptions,
                  texts: list[str], titles: dict[str, str], rehearsal, cfg, ckpt_dir: str | Path, *,
                  replay_ratio: float = 1.0, label_smoothing: float = 0.1, num_beams: int = 20, batch_size: int = 8,
                  seed: int = 0, max_steps: int | None = None, on_log=None, progress: bool = True,
                  pseudo_queries: bool = False) -> AddResult:
    """Incremental indexing (DSI++-style): the new documents' EDs join the trie, and the model is fine-tuned
    on their pairs mixed with a replay sample of `replay_ratio` old pairs per new pair. Hits@10 and MRR@10 on
    the old held-out queries before and after (forgetting), and on the new documents' held-out queries."""
    from components.sedsi.training import build_pairs, replay_sample

    report: dict[str, float] = {}

    def measure(name: str, idx: SedsiIndex, table: pd.DataFrame) -> None:
        if table.empty:
            return
        queries, qrels = as_qrels(table)
        metrics, _ = idx.evaluate(queries, qrels, num_beams, batch_size)
        report[f"{name}.hits@10"], report[f"{name}.mrr@10"] = metrics["hits@10"], metrics["mrr@10"]
        report[f"{name}.queries"] = float(len(table))

    measure("old_before", index, old_eval)
    grown = index.extended(descriptions, titles)
    new_pairs = build_pairs(list(descriptions.doc_ids), texts, descriptions, rehearsal, seed=seed,
                            pseudo_queries=pseudo_queries)
    replay = replay_sample(old_pairs, round(replay_ratio * len(new_pairs)), seed)
    result = train_index(grown, new_pairs + replay, cfg, ckpt_dir, label_smoothing, on_log=on_log,
                         progress=progress, max_steps=max_steps)
    new_eval = heldout_table(descriptions)
    measure("old_after", grown, old_eval)
    measure("new_after", grown, new_eval)
    if "old_before.hits@10" in report and "old_after.hits@10" in report:
        report["forgetting.hits@10"] = report["old_before.hits@10"] - report["old_after.hits@10"]
    report.update({"pairs_new": float(len(new_pairs)), "pairs_replayed": float(len(replay)),
                   "documents_added": float(len(descriptions.doc_ids))})
    grown.lineage.append({"stage": "sedsi_index_add", "documents": len(descriptions.doc_ids),
                          "replayed_pairs": len(replay)})
    eval_queries = pd.concat([old_eval, new_eval], ignore_index=True)
    return AddResult(grown, old_pairs + new_pairs, eval_queries, report, result)
