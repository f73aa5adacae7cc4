"""Elaborative Descriptions (EDs): a generated query per document, used as its identifier (SE-DSI, Sec. 4.1).

A query-generation model (the pipeline's teacher by default) is asked, through its chat template, to write
a short search query the document answers. It samples `candidates` queries per document (do_sample,
top_k=10, 10 per document as in the paper); the candidates are ranked by the generator's own mean token
log-probability, finished ones (ended with EOS) before truncated ones, and the top-1 becomes the ED.
The other distinct candidates are pseudo-queries: `heldout` of them (a seeded choice) are kept out of
training to evaluate retrieval; the rest train the "Query: q -> ED" pairs.

EDs are not forced unique. `ed_to_docs` maps each ED to its documents; the collision rate (documents whose
ED another document shares; the paper reports 3-5%) is reported, and retrieval returns every document of a
retrieved ED (components.sedsi.metrics.expand_rankings).

A document for which no candidate has any text (the generator wrote EOS at once every time) gets its
leading words as ED; such documents are counted in `Descriptions.from_text`, never dropped.

Example::

    eds = generate_descriptions(teacher, tokenizer, ["d1", "d2"], [text1, text2], EdSettings(candidates=10))
    eds.eds            # ["who wrote the origin of species", ...]
    eds.ed_to_docs     # {"who wrote the origin of species": ["d1"], ...}
    eds.heldout        # per document, pseudo-queries kept for evaluation
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from components.generation.batched import _eos_ids, decode_batches, format_prompts
from components.generation.padding import pad_rows
from components.generation.static import Sampling
from components.sedsi.metrics import collision_rate, invert_eds

INSTRUCTION = (
    "Write one short search query that the following document answers. Reply with the query only."
)


@dataclass(frozen=True)
class EdSettings:
    candidates: int = 10  # sampled queries per document
    top_k: int = 10
    temperature: float = 1.0
    max_tokens: int = 20  # an ED is at most this many tokens
    heldout: int = 2  # pseudo-queries per document kept out of training, for evaluation
    max_doc_tokens: int = 256  # the document's leading tokens shown to the generator
    batch_size: int = 16
    seed: int = 0
    engine: str = "auto"
    instruction: str = INSTRUCTION

    def __post_init__(self):
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")
        if self.heldout < 0 or self.max_tokens < 1 or self.max_doc_tokens < 1:
            raise ValueError("heldout must be >= 0, max_tokens and max_doc_tokens >= 1")


@dataclass
class Descriptions:
    doc_ids: list[str]
    eds: list[str]
    candidates: list[list[str]]  # distinct candidate texts, best first (the ED first)
    scores: list[list[float]]  # mean token log-probability of each candidate under the generator
    train_queries: list[list[str]]
    heldout: list[list[str]]
    from_text: list[str] = field(default_factory=list)  # doc ids whose ED came from their leading words

    @property
    def ed_to_docs(self) -> dict[str, list[str]]:
        return invert_eds(dict(zip(self.doc_ids, self.eds, strict=True)))

    @property
    def collision_rate(self) -> float:
        return collision_rate(self.ed_to_docs)

    def rows(self) -> list[dict]:
        """One record per document, for a parquet table."""
        return [
            {"doc_id": d, "ed": e, "candidates": c, "scores": s, "train_queries": t, "heldout_queries": h,
             "ed_from_text": d in self.from_text}
            for d, e, c, s, t, h in zip(self.doc_ids, self.eds, self.candidates, self.scores, self.train_queries,
                                        self.heldout, strict=True)
        ]

    @classmethod
    def from_rows(cls, rows: list[dict]) -> Descriptions:
        return cls(
            doc_ids=[r["doc_id"] for r in rows], eds=[r["ed"] for r in rows],
            candidates=[list(r["candidates"]) for r in rows], scores=[list(r["scores"]) for r in rows],
            train_queries=[list(r["train_queries"]) for r in rows], heldout=[list(r["heldout_queries"]) for r in rows],
            from_text=[r["doc_id"] for r in rows if r["ed_from_text"]],
        )


def normalise(text: str) -> str:
    """One line, single spaces, no surrounding quotes: the form an ED and a query are compared in."""
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip("\"'` ").strip()


@torch.inference_mode()
def sequence_scores(model, prompts: list[list[int]], continuations: list[list[int]], pad_id: int,
                    batch_size: int = 16) -> list[float]:
    """Mean log-probability per token of each continuation given its prompt (one forward per batch)."""
    scores: list[float] = [float("-inf")] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(continuations[i])))
    for a in range(0, len(order), batch_size):
        batch = [i for i in order[a : a + batch_size] if continuations[i]]
        if not batch:
            continue
        ids, mask = pad_rows([prompts[i] + continuations[i] for i in batch], pad_id, device=model.device)
        width = ids.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        logp = F.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        for b, i in enumerate(batch):
            n = len(continuations[i])
            scores[i] = float(logp[b, width - 1 - n :].mean())
    return scores


def generate_descriptions(
    model, tokenizer, doc_ids: list[str], texts: list[str], settings: EdSettings = EdSettings(),
    progress: bool = True,
) -> Descriptions:
    """The ED, ranked candidates and pseudo-queries of every document (see the module docstring)."""
    if len(doc_ids) != len(texts):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(texts)} texts")
    if not doc_ids:
        raise ValueError("no document to describe")
    empty = [d for d, t in zip(doc_ids, texts, strict=True) if not str(t).strip()]
    if empty:
        raise ValueError(f"{len(empty)} documents have no text (first: {empty[:5]})")
    eos = sorted(_eos_ids(model, tokenizer))
    if not eos:
        raise ValueError("the ED generator has no EOS token: set generation_config.eos_token_id")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]

    shown = [_leading_tokens(tokenizer, t, settings.max_doc_tokens) for t in texts]
    rendered = format_prompts(tokenizer, [settings.instruction] * len(texts), shown)
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    k = settings.candidates
    repeated = [p for p in prompt_ids for _ in range(k)]
    sampled = decode_batches(
        model, repeated, max_new_tokens=settings.max_tokens,
        sampling=Sampling(do_sample=True, temperature=settings.temperature, top_k=settings.top_k),
        eos=eos, pad_id=pad_id, batch_size=settings.batch_size, seed=settings.seed, engine=settings.engine,
        progress=progress, desc="ed candidates",
    )
    scores = sequence_scores(model, repeated, sampled, pad_id, settings.batch_size)

    out = Descriptions(doc_ids=list(doc_ids), eds=[], candidates=[], scores=[], train_queries=[], heldout=[])
    eos_set = set(eos)
    for d, doc_id in enumerate(tqdm(doc_ids, desc="eds", unit="doc", disable=not progress)):
        ranked: dict[str, tuple[bool, float]] = {}
        for c in range(d * k, (d + 1) * k):
            tokens = sampled[c]
            finished = bool(tokens) and tokens[-1] in eos_set
            text = normalise(tokenizer.decode(tokens[:-1] if finished else tokens, skip_special_tokens=True))
            if text and (text not in ranked or (finished, scores[c]) > ranked[text]):
                ranked[text] = (finished, scores[c])
        order = sorted(ranked, key=lambda t: (not ranked[t][0], -ranked[t][1], t))
        if not order:
            order = [normalise(" ".join(texts[d].split()[:8]))]
            ranked[order[0]] = (False, float("nan"))
            out.from_text.append(doc_id)
        ed, others = order[0], order[1:]
        rng = random.Random(f"{settings.seed}:{doc_id}")
        held = sorted(rng.sample(range(len(others)), min(settings.heldout, len(others))))
        out.eds.append(ed)
        out.candidates.append(order)
        out.scores.append([ranked[t][1] for t in order])
        out.heldout.append([others[i] for i in held])
        out.train_queries.append([q for i, q in enumerate(others) if i not in held])
    return out


def _leading_tokens(tokenizer, text: str, limit: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= limit else tokenizer.decode(ids[:limit], skip_special_tokens=True)
