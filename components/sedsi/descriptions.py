"""Elaborative Descriptions (EDs): a generated query per document, used as its identifier (SE-DSI, Tang et
al., KDD 2023, arXiv 2305.15115, Sec. 3.2).

The paper generates queries with a query-generation model (docT5query) by top-k sampling (k=10, 10 queries
per document, as DSI-QG, Zhuang et al. 2022, Sec. 3.1, does for its pseudo-queries) and takes the top one as
the document's ED. Here the generator is an instruction model (the pipeline's teacher by default), asked
through its chat template to write a short search query the document answers; `EdConfig.prompt`
"few_shot" (the default, by measurement: with "plain" SmolLM2-135M-Instruct echoes the instruction or
answers as an assistant far more often) shows it one worked example first (a user turn and the assistant's
query); it sometimes copies the example's query, which the filter and the specificity score reject.

Candidates are ranked by `EdConfig.scorer`:
- "mean_logprob": the generator's mean token log-probability of the candidate given the prompt;
- "specificity": log p(q | prompt with the document) - log p(q | the same prompt without it), summed over
  the candidate's tokens: pointwise mutual information between query and document, which prefers queries
  that identify their document over generic ones ("What can I do for you?" scores high on the first but
  near zero on this one).
Finished candidates (ended with EOS) come before truncated ones. With `filter_generic` (a deviation from the
paper, measured in bench/results/sedsi.md) a candidate that shares no content word with its document
(lowercased words of 3+ letters outside bm25s's extended English stopwords) or reads as assistant boilerplate or an echo of the
instruction ("I'm here to help", "How can I assist you", "Write one short search query that the document
answers"; the `BOILERPLATE` pattern) ranks after every other candidate: it is the ED only when nothing
else is left. `Descriptions.generic` lists the documents whose ED is such a fallback (metric
`ed.generic_share`, with a warning).

Cost: each document's prompt is run once, not once per candidate (`sample_shared_prompt` repeats its KV
cache for the k samples), and the mean log-prob of a candidate is read off while sampling (the log-softmax
of the untempered logits, gathered at the sampled token). The specificity scorer adds one forward over the
candidates after the document-free prompt, also run once (`shared_prompt_logprobs`). No [B, T, V]
log-softmax over a prompt is ever computed; `continuation_logprobs` (the same numbers by a plain forward)
gathers at candidate positions only.

The other distinct candidates are pseudo-queries: `heldout` of them (a seeded choice) are kept out of
training for the `pseudo.*` evaluation; the rest train `Query: q -> ED` pairs only under the DSI-QG recipe
(`sedsi.pairs: dsi_qg`).

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
    eds.generic_share  # share of documents whose ED names nothing of the document
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from tqdm.auto import tqdm

from components.generation.batched import _eos_ids
from components.generation.padding import pad_rows
from components.sedsi.metrics import collision_rate, invert_eds
from semflow.config.sedsi import EdConfig

log = logging.getLogger(__name__)

EdSettings = EdConfig  # the settings are the config model: one home for every default

INSTRUCTION = "Write one short search query that the following document answers. Reply with the query only."
EXAMPLE_DOCUMENT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It was built for the "
    "1889 World's Fair and was the tallest man-made structure in the world until 1930."
)
EXAMPLE_QUERY = "when was the eiffel tower in paris built"
BOILERPLATE = re.compile(  # assistant talk, and echoes of the instruction itself
    r"\b(assist(ance)?|help(ful)? (you|with)|how can i|i'?m (here|ready|happy|glad)|i am (here|ready)|"
    r"your (query|question|request)|as an ai|what is this|let me know|sure[,!]|search query|"
    r"(the|this|following) (document|text|passage)|here'?s|revised version|(excellent|great) question)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z]{3,}")
WARN_GENERIC_SHARE = 0.1


@dataclass
class Descriptions:
    doc_ids: list[str]
    eds: list[str]
    candidates: list[list[str]]  # distinct candidate texts, best first (the ED first)
    scores: list[list[float]]  # each candidate's score under the ED scorer
    train_queries: list[list[str]]
    heldout: list[list[str]]
    from_text: list[str] = field(default_factory=list)  # doc ids whose ED came from their leading words
    generic: list[str] = field(default_factory=list)  # doc ids whose ED is generic (no better candidate)

    @property
    def ed_to_docs(self) -> dict[str, list[str]]:
        return invert_eds(dict(zip(self.doc_ids, self.eds, strict=True)))

    @property
    def collision_rate(self) -> float:
        return collision_rate(self.ed_to_docs)

    @property
    def generic_share(self) -> float:
        return len(self.generic) / max(len(self.doc_ids), 1)

    def rows(self) -> list[dict]:
        """One record per document, for a parquet table."""
        generic = set(self.generic)
        return [
            {"doc_id": d, "ed": e, "candidates": c, "scores": s, "train_queries": t, "heldout_queries": h,
             "ed_from_text": d in self.from_text, "ed_generic": d in generic}
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
            generic=[r["doc_id"] for r in rows if r.get("ed_generic", False)],
        )


def normalise(text: str) -> str:
    """One line, single spaces, no surrounding quotes: the form an ED and a query are compared in."""
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip("\"'` ").strip()


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS)


def content_words(text: str) -> set[str]:
    """Lowercased words of 3+ letters that are not English stopwords (bm25s's extended list, which has the
    question words: "what", "how", "does", ...)."""
    return {w for w in _WORD.findall(text.lower()) if w not in _stopwords()}


def is_generic(query: str, document: str) -> bool:
    """True when `query` shares no content word with `document` or reads as assistant boilerplate."""
    return bool(BOILERPLATE.search(query)) or not (content_words(query) & content_words(document))


def render_prompts(tokenizer, documents: list[str], prompt: str = "few_shot",
                   instruction: str = INSTRUCTION) -> list[str]:
    """The query-writing prompt per document (an empty document gives the document-free prompt that the
    specificity scorer conditions log p(q) on)."""
    if prompt not in ("plain", "few_shot"):
        raise ValueError(f"prompt must be 'plain' or 'few_shot', got {prompt!r}")
    shots = [(f"{instruction}\n\n{EXAMPLE_DOCUMENT}", EXAMPLE_QUERY)] if prompt == "few_shot" else []
    rendered = []
    for doc in documents:
        user = f"{instruction}\n\n{doc}" if doc else instruction
        if getattr(tokenizer, "chat_template", None):
            messages = [m for q, a in shots for m in ({"role": "user", "content": q},
                                                      {"role": "assistant", "content": a})]
            messages.append({"role": "user", "content": user})
            rendered.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        else:
            rendered.append("".join(f"{q}\n\nQuery: {a}\n\n" for q, a in shots) + f"{user}\n\nQuery: ")
    return rendered


@torch.inference_mode()
def continuation_logprobs(model, prompts: list[list[int]], continuations: list[list[int]], pad_id: int,
                          batch_size: int = 16) -> list[list[float]]:
    """Per continuation, the log-probability of each of its tokens given the prompt and the tokens before it.

    One forward per batch of right-padded rows; the lm_head and the log-normaliser run on the continuation
    positions only (hidden states gathered there), never over the prompt. Causal LMs only."""
    out: list[list[float]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(continuations[i])))
    head = model.get_output_embeddings()
    for a in range(0, len(order), batch_size):
        batch = [i for i in order[a : a + batch_size] if continuations[i]]
        if not batch:
            continue
        ids, mask = pad_rows([prompts[i] + continuations[i] for i in batch], pad_id, left=False, device=model.device)
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = torch.cat([torch.full((len(continuations[i]),), b) for b, i in enumerate(batch)]).to(ids.device)
        cols = torch.cat([torch.arange(len(prompts[i]) - 1, len(prompts[i]) + len(continuations[i]) - 1)
                          for i in batch]).to(ids.device)  # the hidden state at t predicts token t + 1
        logits = head(hidden[rows, cols]).float()
        targets = ids[rows, cols + 1]
        logp = (logits.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits, -1)).tolist()
        start = 0
        for i in batch:
            n = len(continuations[i])
            out[i], start = logp[start : start + n], start + n
    return out


@torch.inference_mode()
def sample_shared_prompt(model, prompts: list[list[int]], k: int, *, max_new_tokens: int, temperature: float,
                         top_k: int, eos: list[int], pad_id: int, batch_size: int = 16, seed: int = 0,
                         progress: bool = False) -> tuple[list[list[int]], list[list[float]]]:
    """k sampled continuations per prompt (document-major) and the model's log-probability of each sampled
    token (the untempered, unfiltered distribution: what the mean_logprob scorer ranks).

    Why not `generate(num_return_sequences=k)`: it repeats every prompt k times before the prefill, so the
    prompt, most of the tokens, is run k times. Here each batch of `batch_size` prompts is prefilled once
    (left-padded, positions ``cumsum(mask) - 1``, logits of the last position only), its KV cache is
    repeated k times (`reorder_cache`), and top-k / temperature sampling (as transformers' TopKLogitsWarper
    and TemperatureLogitsWarper) draws from a `torch.Generator` seeded with `seed + batch number`. A row
    that wrote EOS keeps its EOS last and stops. Causal LMs only."""
    from components.sedsi.beam_search import _cache_kwarg, _cache_of

    device, eos_ids = model.device, torch.tensor(sorted(set(eos)), device=model.device)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    cache_kwarg = _cache_kwarg(model)
    tokens: list[list[int]] = []
    logps: list[list[float]] = []
    for b, start in enumerate(tqdm(range(0, len(prompts), batch_size), desc="ed candidates", unit="batch",
                                   disable=not progress)):
        batch = prompts[start : start + batch_size]
        ids, mask = pad_rows(batch, pad_id, device=device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
        rows = torch.arange(len(batch), device=device).repeat_interleave(k)
        cache = _cache_of(out)
        cache.reorder_cache(rows)
        logits, mask, next_pos = out.logits[:, -1][rows], mask[rows], positions[:, -1][rows] + 1
        generator = torch.Generator(device=device).manual_seed(seed + b)
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)
        steps_tok, steps_lp = [], []
        for _ in range(max_new_tokens):
            scores = logits.float()
            logp = torch.log_softmax(scores, -1)
            warped = scores / temperature
            if top_k < warped.shape[-1]:
                kth = warped.topk(top_k, dim=-1).values[:, -1:]
                warped = warped.masked_fill(warped < kth, -math.inf)
            tok = torch.multinomial(torch.softmax(warped, -1), 1, generator=generator)[:, 0]
            tok = torch.where(done, torch.full_like(tok, pad_id), tok)
            steps_tok.append(torch.where(done, -1, tok))
            steps_lp.append(logp.gather(1, tok[:, None])[:, 0])
            done = done | torch.isin(tok, eos_ids)
            if bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None], use_cache=True,
                        **{cache_kwarg: cache})
            cache, logits, next_pos = _cache_of(out), out.logits[:, -1], next_pos + 1
        tok_grid = torch.stack(steps_tok, 1).tolist()
        lp_grid = torch.stack(steps_lp, 1).tolist()
        for row_tok, row_lp in zip(tok_grid, lp_grid, strict=True):
            n = next((i for i, t in enumerate(row_tok) if t < 0), len(row_tok))
            tokens.append(row_tok[:n])
            logps.append(row_lp[:n])
    return tokens, logps


@torch.inference_mode()
def shared_prompt_logprobs(model, prompt: list[int], continuations: list[list[int]], pad_id: int,
                           batch_size: int = 64) -> list[list[float]]:
    """Per continuation, the log-probability of each token after one shared `prompt` (the specificity
    scorer's log p(q)): the prompt is run once per batch and its cache repeated, then the continuations,
    right-padded, in one forward."""
    from components.sedsi.beam_search import _cache_kwarg, _cache_of

    device, out_lp = model.device, [[] for _ in continuations]
    order = [i for i in range(len(continuations)) if continuations[i]]
    for a in range(0, len(order), batch_size):
        batch = order[a : a + batch_size]
        first = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
        cache = _cache_of(first)
        cache.reorder_cache(torch.zeros(len(batch), dtype=torch.long, device=device))
        ids, cont_mask = pad_rows([continuations[i] for i in batch], pad_id, left=False, device=device)
        mask = torch.cat([cont_mask.new_ones(len(batch), len(prompt)), cont_mask], dim=1)
        positions = torch.arange(len(prompt), len(prompt) + ids.shape[1], device=device).expand(len(batch), -1)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                       **{_cache_kwarg(model): cache}).logits.float()
        logits = torch.cat([first.logits[:, -1:].float().expand(len(batch), 1, -1), logits[:, :-1]], dim=1)
        logp = (logits.gather(-1, ids[..., None])[..., 0] - torch.logsumexp(logits, -1)).tolist()
        for row, i in zip(logp, batch, strict=True):
            out_lp[i] = row[: len(continuations[i])]
    return out_lp


def sequence_scores(model, prompts: list[list[int]], continuations: list[list[int]], pad_id: int,
                    batch_size: int = 16) -> list[float]:
    """Mean log-probability per token of each continuation given its prompt (-inf for an empty one)."""
    per_token = continuation_logprobs(model, prompts, continuations, pad_id, batch_size)
    return [sum(lp) / len(lp) if lp else float("-inf") for lp in per_token]


@dataclass
class Candidates:
    """The sampled candidates of every document and the generator's log-probabilities of their tokens with
    and (for the specificity scorer) without the document; `choose` ranks them under any scorer."""

    doc_ids: list[str]
    texts: list[str]
    per_doc: int
    decoded: list[str]  # normalised text of each sample, document-major
    finished: list[bool]
    with_doc: list[list[float]]
    without_doc: list[list[float]] | None

    def scores(self, scorer: str) -> list[float]:
        if scorer == "mean_logprob":
            return [sum(a) / len(a) if a else float("-inf") for a in self.with_doc]
        if scorer == "specificity":
            if self.without_doc is None:
                raise ValueError("specificity needs the document-free log-probs: sample with scorer='specificity'")
            return [sum(a) - sum(b) if a else float("-inf") for a, b in zip(self.with_doc, self.without_doc,
                                                                              strict=True)]
        raise ValueError(f"scorer must be one of mean_logprob, specificity; got {scorer!r}")


def sample_candidates(model, tokenizer, doc_ids: list[str], texts: list[str], settings: EdConfig = EdConfig(),
                      progress: bool = True, score_without_doc: bool | None = None) -> Candidates:
    """Sample `settings.candidates` queries per document and score their tokens (see the module docstring)."""
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
    prompt_ids = tokenizer(render_prompts(tokenizer, shown, settings.prompt), add_special_tokens=False)["input_ids"]
    k = settings.candidates
    sampled, with_doc = sample_shared_prompt(model, prompt_ids, k, max_new_tokens=settings.max_tokens,
                                             temperature=settings.temperature, top_k=settings.top_k, eos=eos,
                                             pad_id=pad_id, batch_size=max(1, settings.batch_size // k),
                                             seed=settings.seed, progress=progress)
    without = None
    if score_without_doc if score_without_doc is not None else settings.scorer == "specificity":
        [no_doc_prompt] = tokenizer(render_prompts(tokenizer, [""], settings.prompt),
                                    add_special_tokens=False)["input_ids"]
        without = shared_prompt_logprobs(model, no_doc_prompt, sampled, pad_id, settings.batch_size)
    eos_set = set(eos)
    finished = [bool(t) and t[-1] in eos_set for t in sampled]
    decoded = [normalise(tokenizer.decode(t[:-1] if f else t, skip_special_tokens=True))
               for t, f in zip(sampled, finished, strict=True)]
    return Candidates(list(doc_ids), list(texts), k, decoded, finished, with_doc, without)


def choose(candidates: Candidates, settings: EdConfig = EdConfig(), progress: bool = False) -> Descriptions:
    """Rank each document's candidates under `settings.scorer` and `settings.filter_generic`: the top one is
    its ED, `settings.heldout` of the others (seeded) are held out, the rest are training pseudo-queries."""
    scores, k, texts = candidates.scores(settings.scorer), candidates.per_doc, candidates.texts
    out = Descriptions(doc_ids=list(candidates.doc_ids), eds=[], candidates=[], scores=[], train_queries=[],
                       heldout=[])
    for d, doc_id in enumerate(tqdm(candidates.doc_ids, desc="eds", unit="doc", disable=not progress)):
        ranked: dict[str, tuple[bool, bool, float]] = {}  # text -> (specific, finished, score)
        for c in range(d * k, (d + 1) * k):
            text, finished = candidates.decoded[c], candidates.finished[c]
            specific = not settings.filter_generic or not is_generic(text, texts[d])
            if text and (text not in ranked or (specific, finished, scores[c]) > ranked[text]):
                ranked[text] = (specific, finished, scores[c])
        order = sorted(ranked, key=lambda t: (not ranked[t][0], not ranked[t][1], -ranked[t][2], t))
        if not order:
            order = [normalise(" ".join(texts[d].split()[:8]))]
            ranked[order[0]] = (True, False, float("nan"))
            out.from_text.append(doc_id)
        ed, others = order[0], order[1:]
        if is_generic(ed, texts[d]):
            out.generic.append(doc_id)
        rng = random.Random(f"{settings.seed}:{doc_id}")
        held = sorted(rng.sample(range(len(others)), min(settings.heldout, len(others))))
        out.eds.append(ed)
        out.candidates.append(order)
        out.scores.append([ranked[t][2] for t in order])
        out.heldout.append([others[i] for i in held])
        out.train_queries.append([q for i, q in enumerate(others) if i not in held])
    if out.generic_share > WARN_GENERIC_SHARE:
        log.warning("%d of %d EDs (%.0f%%) share no content word with their document or are assistant "
                    "boilerplate: they identify nothing (try more ed.candidates, ed.scorer=specificity or "
                    "ed.filter_generic=true)", len(out.generic), len(out.doc_ids), 100 * out.generic_share)
    return out


def generate_descriptions(
    model, tokenizer, doc_ids: list[str], texts: list[str], settings: EdConfig = EdConfig(),
    progress: bool = True,
) -> Descriptions:
    """The ED, ranked candidates and pseudo-queries of every document (see the module docstring)."""
    return choose(sample_candidates(model, tokenizer, doc_ids, texts, settings, progress), settings, progress)


def _leading_tokens(tokenizer, text: str, limit: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= limit else tokenizer.decode(ids[:limit], skip_special_tokens=True)
