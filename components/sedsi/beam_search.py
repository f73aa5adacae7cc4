"""Exact trie-constrained beam search (`constrained_search(engine="trie")`, the default engine).

A beam is a trie node; each step scores only the trie children of the live beams (one gather per
(beam, child) pair and one logsumexp per beam), ranks them per query in a small padded grid, and drops
finished queries from the batch. No [beams, vocab] mask, no top-k over beams * vocab, and the prompt runs
once per query instead of once per beam. Its rankings equal the generate engine's with
`early_stopping="never"` at the same `length_penalty` (tests, random models); scores agree to float32
rounding (batch shapes differ, so matmuls round differently).

Cost: the lm_head over the live beams and its logsumexp remain (exact log-probs need the full
normaliser); on CPU with a 49k vocabulary they are most of a step.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
from transformers.modeling_outputs import BaseModelOutput

from components.sedsi.decoding import Hit, check_args, pad
from components.sedsi.trie import IdTrie


@torch.inference_mode()
def trie_beam_search(model, inputs: Sequence[Sequence[int]], trie: IdTrie, *, num_beams: int, k: int | None = None,
                     max_new_tokens: int | None = None, pad_id: int | None = None,
                     length_penalty: float = 1.0) -> list[list[Hit]]:
    """Exact trie-constrained beam search for one batch of tokenised `inputs`: per input, up to `k` hits.

    A beam is a trie node (its prefix) with a score, the sum of its tokens' log-probs. Each step scores
    only the trie children of the live beams: ``score + logit[token] - logsumexp(logits)``, one gather
    per (beam, child) pair, never a [beams, vocab] mask nor a top-k over beams * vocab. Per input, among
    the candidates of its beams (scattered into a padded [inputs, widest] grid): the EOS candidates
    ranked (by summed log-prob) within the top `num_beams` finish with the score
    ``sum / length ** length_penalty`` (as in transformers' beam search; the length counts the EOS), and
    the `num_beams` best other candidates are the next beams, except those whose best possible finished
    score cannot beat the input's k-th finished ED: sums only decrease, so with `length_penalty > 0` that
    bound is the sum divided by the deepest ED length below the beam's node ** length_penalty (for
    `length_penalty <= 0`: the next length). Removing candidates below a candidate does not change its
    rank, so the top k is the one the full search (transformers' `early_stopping="never"`) returns.
    An input is done when it has no beam left, and
    its rows leave the batch: model rows are the live beams only (ragged, query-major), and the KV
    cache follows them by `reorder_cache`. The prompt is run once per input, not once per beam.

    Causal LMs get the inputs left-padded with positions ``cumsum(mask) - 1`` as `generate` computes
    them; encoder-decoders run the encoder once and decode from `decoder_start_token_id`.
    """
    k = check_args(len(trie), num_beams, k, batch_size=1)
    inputs = [list(ids) for ids in inputs]
    if not inputs:
        return []
    if any(len(ids) == 0 for ids in inputs):
        raise ValueError("every input needs at least one token")
    device = model.device
    trie = trie.to(device)
    eos_id = trie.eos_id
    steps = max_new_tokens or trie.depth
    num_queries = len(inputs)
    decoder = (_Seq2SeqDecoder if getattr(model.config, "is_encoder_decoder", False) else _CausalDecoder)(
        model, pad(inputs, eos_id if pad_id is None else pad_id,
                    left=not getattr(model.config, "is_encoder_decoder", False), device=device))
    logits = decoder.logits
    if trie.key_base > logits.shape[-1] and int(trie.child_tokens.max()) >= logits.shape[-1]:
        raise ValueError(f"the trie holds token ids up to {int(trie.child_tokens.max())}, "
                         f"beyond the model's {logits.shape[-1]} scores")

    deepest = _deepest_leaf(trie) if length_penalty > 0 else None
    neg_inf = torch.tensor(-math.inf, device=device)
    beam_query = torch.arange(num_queries, device=device)  # [R] input of each live beam, non-decreasing
    beam_node = torch.zeros(num_queries, dtype=torch.int64, device=device)
    beam_score = torch.zeros(num_queries, dtype=torch.float32, device=device)
    fin_score = torch.full((num_queries, k), -math.inf, device=device)
    fin_node = torch.zeros((num_queries, k), dtype=torch.int64, device=device)
    for step in range(steps):
        rows, edges, _ = trie.children(beam_node)
        num_cands = rows.numel()
        if num_cands == 0:
            break
        tokens = trie.child_tokens[edges]
        picked = logits[rows, tokens].float()
        cand = beam_score[rows] + (picked - _logsumexp_(logits)[rows])
        cand_query = beam_query[rows]  # non-decreasing: children come in row order
        per_query = torch.bincount(cand_query, minlength=num_queries)
        slot = torch.arange(num_cands, device=device) - (torch.cumsum(per_query, 0) - per_query)[cand_query]
        width = int(per_query.max())
        grid = torch.full((num_queries, width), -math.inf, device=device)
        grid[cand_query, slot] = cand
        grid_cand = torch.zeros((num_queries, width), dtype=torch.int64, device=device)
        grid_cand[cand_query, slot] = torch.arange(num_cands, device=device)
        grid_eos = torch.zeros((num_queries, width), dtype=torch.bool, device=device)
        grid_eos[cand_query, slot] = tokens == eos_id
        top = min(num_beams, width)

        # EOS candidates within each input's top num_beams finish; keep the best k finished per input.
        best, best_at = grid.topk(top, dim=1)
        new_fin = torch.where(grid_eos.gather(1, best_at), best / float(step + 1) ** length_penalty, neg_inf)
        new_node = edges[grid_cand.gather(1, best_at)] + 1
        fin_score, pick = torch.cat([fin_score, new_fin], 1).topk(k, dim=1)
        fin_node = torch.cat([fin_node, new_node], 1).gather(1, pick)

        # The num_beams best non-EOS candidates run on, except those whose best possible finish is at or below
        # the input's k-th finished ED: their EDs could not enter its top k, and dropping them moves no
        # better candidate's rank.
        run, run_at = grid.masked_fill(grid_eos, -math.inf).topk(top, dim=1)
        if length_penalty > 0:
            longest = deepest[edges[grid_cand.gather(1, run_at)] + 1].float()
        else:
            longest = torch.full_like(run, float(step + 2))
        keep = run / longest ** length_penalty > fin_score[:, -1:]  # -inf (no candidate) never passes
        chosen = grid_cand.gather(1, run_at)[keep]  # row-major: query-major, best first
        if chosen.numel() == 0 or step + 1 == steps:
            break
        parent = rows[chosen]
        beam_node, beam_score, beam_query = edges[chosen] + 1, cand[chosen], cand_query[chosen]
        logits = decoder.step(parent, tokens[chosen])

    fin_score, fin_node = fin_score.cpu(), fin_node.cpu()
    found = fin_score > -math.inf
    paths = iter(trie.paths(fin_node[found]))
    scores = iter(fin_score[found].tolist())
    return [[(next(paths), next(scores)) for _ in range(n)] for n in found.sum(1).tolist()]


def _deepest_leaf(trie: IdTrie) -> torch.Tensor:
    """Per node, the depth (from the root, EOS included) of the deepest sequence end below it."""
    deepest = trie.node_depth.clone()
    for level in range(trie.depth, 0, -1):  # children before parents: nodes are numbered level by level
        nodes = (trie.node_depth == level).nonzero().squeeze(1)
        deepest.scatter_reduce_(0, trie.parent[nodes], deepest[nodes], reduce="amax")
    return deepest


def _logsumexp_(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last dim [R, V] -> [R] in float32, overwriting `logits` when they are float32.

    Same result as `torch.logsumexp` (max-shifted), without its [R, V] temporaries: on CPU with a 49k
    vocabulary that took it from about a fifth of the trie engine's time to under a tenth.
    """
    x = logits.float()
    top = x.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    return x.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(-1))


def _cache_kwarg(model) -> str:
    """The forward argument that takes the KV cache: `cache` (transformers >= 5.2x) or `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class _CausalDecoder:
    """Prefill the left-padded prompts once, then feed one token per live beam; `logits` [rows, vocab]."""

    def __init__(self, model, padded: dict[str, torch.Tensor]):
        self.model, self.cache_kwarg = model, _cache_kwarg(model)
        mask = padded["attention_mask"]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate computes them
        extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        out = model(input_ids=padded["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                    **extra)
        self.cache, self.mask, self.next_pos = _cache_of(out), mask, positions[:, -1] + 1
        self.logits = out.logits[:, -1]

    def step(self, parent: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        self.cache.reorder_cache(parent)
        mask = self.mask.index_select(0, parent)
        self.mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = self.next_pos.index_select(0, parent)
        self.next_pos = positions + 1
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=positions[:, None],
                         use_cache=True, **{self.cache_kwarg: self.cache})
        self.cache = _cache_of(out)
        return out.logits[:, -1]


class _Seq2SeqDecoder:
    """Encode once; decode from `decoder_start_token_id` with the cache, one row per live beam."""

    def __init__(self, model, padded: dict[str, torch.Tensor]):
        self.model, self.cache_kwarg = model, _cache_kwarg(model)
        encoder_out = model.get_encoder()(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                                          return_dict=True)
        self.hidden, self.enc_mask = encoder_out.last_hidden_state, padded["attention_mask"]
        self.row_query = torch.arange(self.hidden.shape[0], device=self.hidden.device)
        start = getattr(model.generation_config, "decoder_start_token_id", None)
        start = model.config.decoder_start_token_id if start is None else start
        if start is None:
            raise ValueError("the encoder-decoder model has no decoder_start_token_id")
        first = torch.full((self.hidden.shape[0], 1), int(start), dtype=torch.long, device=self.hidden.device)
        out = model(encoder_outputs=encoder_out, attention_mask=self.enc_mask, decoder_input_ids=first,
                    use_cache=True)
        self.cache = _cache_of(out)
        self.logits = out.logits[:, -1]

    def step(self, parent: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        self.cache.reorder_cache(parent)  # self- and cross-attention caches
        self.row_query = self.row_query.index_select(0, parent)
        hidden = self.hidden.index_select(0, self.row_query)
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                         attention_mask=self.enc_mask.index_select(0, self.row_query),
                         decoder_input_ids=tokens[:, None], use_cache=True, **{self.cache_kwarg: self.cache})
        self.cache = _cache_of(out)
        return out.logits[:, -1]


