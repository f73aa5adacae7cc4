"""SE-DSI training data and loss: every input that should retrieve a document is paired with its ED.

Pairs, one summed loss (the multitask loss of SE-DSI, Tang et al., KDD 2023, arXiv 2305.15115, Sec. 3.4):
- "Document: <full document>" -> ED   (the document, cut to `max_input_tokens`)
- "Document: <passage RC>" -> ED      (components.sedsi.rehearsal, Sec. 3.3)
- "Document: <sentence RC>" -> ED
- "Query: <labelled query>" -> ED     (the training share of the labelled queries; none: zero-shot)
and, only with `pseudo_queries=True` (`sedsi.pairs: dsi_qg`), the recipe of DSI-QG (Zhuang et al. 2022,
arXiv 2206.10128, Sec. 3), which the paper compares against:
- "Query: <pseudo-query>" -> ED       (the generator's other sampled queries for the document)

Encoding: a causal LM sees `<input>\\n=> ` then the ED's tokens and EOS, and learns only the ED part;
a seq2seq model encodes the input and decodes the ED and EOS. The ED's tokens are exactly the sequences
of the prefix trie (`IdEncoder.ed_ids`), so what is learnt is what decoding may produce.

The loss is token cross-entropy with label smoothing (0.1 as in the paper) over the ED tokens; for a
causal LM the logits are computed only at those positions (an [n, V] matrix for n ED tokens, not
[B, T, V]). Training itself is components.training.trainer.Trainer (checkpoints, resume, logging).

Example::

    encoder = IdEncoder(tokenizer, is_encoder_decoder=False, max_input_tokens=256)
    pairs = build_pairs(doc_ids, texts, descriptions, RehearsalSettings())
    examples = [encoder.example(p) for p in pairs]
    trainer = Trainer(model, index_loss_fn(model, 0.1), examples, encoder.collate, TrainerConfig(), ckpt_dir)
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from components.distill.losses import IGNORE
from components.sedsi.descriptions import Descriptions
from components.sedsi.rehearsal import RehearsalSettings, rehearsal_contents

PREFIX = {"document": "Document: ", "passage": "Document: ", "sentence": "Document: ", "query": "Query: "}
SEPARATOR = "\n=> "
KINDS = tuple(PREFIX)


@dataclass(frozen=True)
class IndexPair:
    kind: str  # document | passage | sentence | query
    text: str
    ed: str
    doc_id: str


@dataclass(frozen=True)
class IndexExample:
    input_ids: list[int]
    ed_ids: list[int]  # ED tokens + EOS: the labels


def build_pairs(doc_ids: list[str], texts: list[str], descriptions: Descriptions, rehearsal: RehearsalSettings,
                seed: int = 0, queries: dict[str, list[str]] | None = None,
                pseudo_queries: bool = False) -> list[IndexPair]:
    """Every training pair of these documents, in document order: the document, its rehearsal passages and
    sentences, `queries` (labelled training queries per doc id) and, with `pseudo_queries`, its training
    pseudo-queries (DSI-QG)."""
    ed_of = dict(zip(descriptions.doc_ids, descriptions.eds, strict=True))
    pseudo = dict(zip(descriptions.doc_ids, descriptions.train_queries, strict=True))
    pairs: list[IndexPair] = []
    for doc_id, text in zip(doc_ids, texts, strict=True):
        if doc_id not in ed_of:
            raise KeyError(f"document {doc_id!r} has no ED")
        ed = ed_of[doc_id]
        rc = rehearsal_contents(text, rehearsal, seed=f"{seed}:{doc_id}")
        pairs.append(IndexPair("document", text, ed, doc_id))
        pairs.extend(IndexPair("passage", t, ed, doc_id) for t in rc.passages)
        pairs.extend(IndexPair("sentence", t, ed, doc_id) for t in rc.sentences)
        inputs = (pseudo[doc_id] if pseudo_queries else []) + (queries or {}).get(doc_id, [])
        pairs.extend(IndexPair("query", q, ed, doc_id) for q in inputs)
    return pairs


def pair_counts(pairs: list[IndexPair]) -> dict[str, int]:
    counts = Counter(p.kind for p in pairs)
    return {kind: counts.get(kind, 0) for kind in KINDS}


def replay_sample(pairs: list[IndexPair], n: int, seed: int) -> list[IndexPair]:
    """A seeded sample of n old pairs (without replacement) for rehearsal during incremental indexing."""
    return random.Random(seed).sample(pairs, min(n, len(pairs)))


class IdEncoder:
    """Token ids of inputs and EDs for one backbone (causal: input + separator + ED + EOS)."""

    def __init__(self, tokenizer, is_encoder_decoder: bool, max_input_tokens: int = 256):
        if tokenizer.eos_token_id is None:
            raise ValueError("the backbone's tokenizer has no EOS token")
        self.tokenizer, self.is_encoder_decoder = tokenizer, is_encoder_decoder
        self.max_input_tokens = max_input_tokens
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.separator = [] if is_encoder_decoder else tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]

    def ed_ids(self, ed: str) -> list[int]:
        """The ED's token ids, EOS-terminated: one sequence of the prefix trie."""
        ids = self.tokenizer(ed, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"ED {ed!r} has no tokens")
        return ids + [self.eos_id]

    def input_ids(self, kind: str, text: str) -> list[int]:
        """The model input for a pair or a search: prefix + text cut to max_input_tokens (+ separator)."""
        ids = self.tokenizer(PREFIX[kind] + text, add_special_tokens=self.is_encoder_decoder)["input_ids"]
        if self.is_encoder_decoder and len(ids) > self.max_input_tokens:
            ids = ids[: self.max_input_tokens - 1] + ids[-1:]  # keep the closing special token
        return ids[: self.max_input_tokens] + self.separator

    def example(self, pair: IndexPair) -> IndexExample:
        return IndexExample(self.input_ids(pair.kind, pair.text), self.ed_ids(pair.ed))

    def collate(self, examples: list[IndexExample]) -> dict[str, torch.Tensor]:
        """Causal: right-padded input + ED, labels on the ED. Seq2seq: inputs and labels padded apart."""
        if self.is_encoder_decoder:
            width, out_width = max(len(e.input_ids) for e in examples), max(len(e.ed_ids) for e in examples)
            ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full((len(examples), out_width), IGNORE, dtype=torch.long)
            for b, e in enumerate(examples):
                ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
                mask[b, : len(e.input_ids)] = 1
                labels[b, : len(e.ed_ids)] = torch.tensor(e.ed_ids)
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}
        width = max(len(e.input_ids) + len(e.ed_ids) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, IGNORE)
        for b, e in enumerate(examples):
            p, n = len(e.input_ids), len(e.ed_ids)
            ids[b, : p + n] = torch.tensor(e.input_ids + e.ed_ids)
            mask[b, : p + n] = 1
            labels[b, p : p + n] = torch.tensor(e.ed_ids)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def index_loss_fn(model, label_smoothing: float = 0.1):
    """loss_fn(batch) -> (loss, stats) for the Trainer: label-smoothed cross-entropy over ED tokens."""
    is_seq2seq = model.config.is_encoder_decoder

    def loss_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if is_seq2seq:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           labels=batch["labels"]).logits
            flat_logits, flat_labels = logits.flatten(0, 1), batch["labels"].flatten()
            keep = flat_labels != IGNORE
            flat_logits, flat_labels = flat_logits[keep], flat_labels[keep]
        else:
            rows = batch["labels"][:, 1:] != IGNORE  # hidden state at t predicts token t + 1
            hidden = model.base_model(input_ids=batch["input_ids"],
                                      attention_mask=batch["attention_mask"]).last_hidden_state
            flat_logits = model.get_output_embeddings()(hidden[:, :-1][rows])
            flat_labels = batch["labels"][:, 1:][rows]
        loss = F.cross_entropy(flat_logits.float(), flat_labels, label_smoothing=label_smoothing)
        with torch.no_grad():
            accuracy = (flat_logits.argmax(-1) == flat_labels).float().mean()
        return loss, {"token_accuracy": float(accuracy)}

    return loss_fn
