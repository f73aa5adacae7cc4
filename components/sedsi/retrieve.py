"""Trie-constrained beam search: decode the EDs (document identifiers) a model ranks highest for a query.

Three ways to run the same search, all restricted to the paths of an `IdTrie`:

- `trie_beam_search` (`constrained_search(engine="trie")`, the default): our own exact beam search.
  A beam is a trie node; each step scores only the trie children of the live beams (one gather per
  (beam, child) pair and one logsumexp per beam), ranks them per query in a small padded grid, and
  drops finished queries from the batch. No [beams, vocab] mask, no top-k over beams * vocab, and the
  prompt runs once per query instead of once per beam.
- `TrieLogitsProcessor` + `model.generate` (`constrained_search(engine="generate")`): at each step it
  walks all beams' generated prefixes through the trie at once (one `searchsorted` per generated
  column, all rows together) and keeps only the scores of the tokens that extend each prefix.
- `prefix_allowed_tokens_fn_for` + `reference_search`: the usual DSI/NCI approach (a nested-dict trie
  walked in Python for each beam through transformers' `prefix_allowed_tokens_fn`), kept as the
  baseline for the benchmark and for tests that all give the same rankings.

All work for causal LMs (left-padded prompts) and encoder-decoders alike, take queries as texts or as
token-id lists, and return per query the distinct EOS-terminated EDs with their log-probabilities,
best first.

Example::

    trie = IdTrie.build([tokenizer(ed, add_special_tokens=False)["input_ids"] for ed in eds],
                        eos_id=tokenizer.eos_token_id)
    hits = constrained_search(model, tokenizer, ["<query text>"], trie, num_beams=20, k=10)
    for ed_ids, logprob in hits[0]:
        print(tokenizer.decode(ed_ids, skip_special_tokens=True), logprob)

Design notes:
- The processor walks each beam's whole generated prefix at every step instead of keeping a node per
  beam: logits processors are not told how beams were reordered, and a walk of the <= ~25 generated
  tokens costs one `searchsorted` per column over all beams (microseconds), far below the full
  [beams, vocab] pass that masking costs anyway. It is stateless and so robust to beam reordering,
  finished beams and padding.
- Scores: with `length_penalty=0` a beam's score is the plain sum of its tokens' log-probs. Asking
  transformers for them (`output_scores=True`) would copy the full [beams, vocab] scores at every step,
  so the processor instead records the log-prob of each allowed token per (query, trie edge) as it
  masks, and `constrained_search` sums those along each returned ED (same float32 additions in the
  same order as the beam search).
- Trie engine semantics follow transformers' beam search with `length_penalty=0` and
  `early_stopping="never"`: per step, EOS candidates ranked within a query's top `num_beams` finish,
  the `num_beams` best other candidates run on. Beams at or below a query's k-th finished score are
  dropped (their EDs cannot enter its top k), so a query stops as soon as its top k can no longer
  change, with the same top k as running on.
  Its rankings equal the generate engine's with `early_stopping="never"` (tests, random models);
  scores agree to float32 rounding (batch shapes differ, so matmuls round differently).
- Trie engine cost: the lm_head over the live beams and its logsumexp remain (exact log-probs need
  the full normaliser); on CPU with a 49k vocabulary they are most of a step.
- Generate engine: `early_stopping=True` (default) ends a query's search once `num_beams` EDs have
  finished. With `length_penalty=0`, `early_stopping="never"` (or False) is the exact textbook beam
  search: it stops only when no running beam can still beat the worst finished ED. On the benchmark's random model
  both returned identical rankings at about the same speed.
- Beams 1.. start at -1e9 in transformers' beam search; where fewer tokens are allowed than beams are
  kept (a narrow trie root, more beams than EDs), such copies of real prefixes run along and can
  finish. They are trie members, so they are kept with their true log-prob (deduplicated), which is
  why results are re-sorted by score rather than taken in the beam search's order.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from components.generation.padding import pad_rows
from components.sedsi.trie import IdTrie

Hit = tuple[list[int], float]
Queries = Sequence[str] | Sequence[Sequence[int]]  # input texts, or the model's input token ids per query


class TrieLogitsProcessor(LogitsProcessor):
    """Set to -inf the score of every token that does not extend a beam's prefix in `trie`.

    `input_ids` rows are [batch * num_beams, cur_len]; the generated part of a row starts at `prefix_len`
    (causal LM: the padded prompt length; encoder-decoder: 1, after the decoder start token). Rows whose
    prefix ended with EOS or left the trie (only possible for beams already at -inf) may only emit
    EOS or `pad_token_id`, so every row keeps a finite choice and beam search stays well defined.

    With `num_beams` given, the processor also records the score of each allowed token per query and
    trie edge, read back by `sequence_scores` (rows must be laid out query-major, as `generate` does).
    Beam search passes log-probs; with `num_beams=1` transformers passes raw logits, so the recorded
    rows are log-softmaxed first.
    """

    def __init__(self, trie: IdTrie, prefix_len: int, pad_token_id: int | None = None,
                 num_beams: int | None = None):
        if prefix_len < 0:
            raise ValueError(f"prefix_len must be >= 0, got {prefix_len}")
        if num_beams is not None and num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        self.trie = trie
        self.prefix_len = prefix_len
        self.end_tokens = sorted({trie.eos_id} | ({pad_token_id} if pad_token_id is not None else set()))
        self.num_beams = num_beams
        self._on_device: dict[torch.device, tuple[IdTrie, torch.Tensor]] = {}
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []

    def _trie_on(self, device: torch.device) -> tuple[IdTrie, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self.trie.to(device), torch.tensor(self.end_tokens, device=device))
        return self._on_device[device]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        trie, end_tokens = self._trie_on(scores.device)
        if trie.key_base > scores.shape[1] and int(trie.child_tokens.max()) >= scores.shape[1]:
            raise ValueError(f"the trie holds token ids up to {int(trie.child_tokens.max())}, "
                             f"beyond the model's {scores.shape[1]} scores")
        nodes = trie.walk(input_ids[:, self.prefix_len:])
        rows, edges, count = trie.children(nodes)
        tokens = trie.child_tokens[edges]
        kept = scores[rows, tokens]
        if self.num_beams is not None:
            self._record(trie, nodes, rows, edges, kept, scores)
        out = torch.full_like(scores, -math.inf)
        out[rows, tokens] = kept
        # Finished or stray rows: EOS / pad only (no host sync: a where over the few end-token columns).
        dead = (count == 0)[:, None]
        out[:, end_tokens] = torch.where(dead, scores[:, end_tokens], out[:, end_tokens])
        return out

    def _record(self, trie: IdTrie, nodes, rows, edges, kept, scores) -> None:
        num_rows = nodes.numel()
        row_ids = torch.arange(num_rows, device=nodes.device)
        query = row_ids // self.num_beams
        # Beams of one query that share a prefix see the same scores: record the first (best) row only.
        row_key = query * trie.num_nodes + nodes.clamp(min=0)
        _, inverse = torch.unique(row_key, return_inverse=True)
        first = torch.full((num_rows,), num_rows, device=nodes.device, dtype=torch.int64)
        first = first.scatter_reduce(0, inverse, row_ids, reduce="amin")
        is_first = (first[inverse] == row_ids)[rows]
        values = kept[is_first].float()
        if self.num_beams == 1:  # greedy search hands processors raw logits
            values = values - torch.logsumexp(scores.float(), dim=-1)[rows[is_first]]
        self._keys.append(query[rows[is_first]] * max(trie.edge_keys.numel(), 1) + edges[is_first])
        self._values.append(values)

    def reset(self) -> None:
        """Forget recorded scores (before reusing the processor for another `generate` call)."""
        self._keys, self._values = [], []

    def sequence_scores(self, query_index: Sequence[int], sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """Summed recorded log-probs [N] of each trie member `sequences[i]` for query `query_index[i]`.

        NaN where a token's score was never recorded (the sequence was not decoded through this
        processor, or is not in the trie).
        """
        if self.num_beams is None:
            raise RuntimeError("this TrieLogitsProcessor records no scores: construct it with num_beams")
        n = len(sequences)
        if n == 0:
            return torch.zeros(0)
        trie = self.trie.to("cpu")
        keys = torch.cat(self._keys).cpu() if self._keys else torch.zeros(0, dtype=torch.int64)
        values = torch.cat(self._values).cpu() if self._values else torch.zeros(0)
        keys, order = torch.sort(keys, stable=True)
        values = values[order]
        first = torch.ones_like(keys, dtype=torch.bool)
        first[1:] = keys[1:] != keys[:-1]
        keys, values = keys[first], values[first]

        width = max(len(s) for s in sequences)
        padded = torch.full((n, width), -1, dtype=torch.int64)
        for i, s in enumerate(sequences):
            padded[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.int64)
        edges = trie.walk_path(padded) - 1  # the edge into node n is n - 1
        lookup = torch.as_tensor(list(query_index), dtype=torch.int64)[:, None] * max(trie.edge_keys.numel(), 1)
        lookup = lookup + edges
        step = torch.full(edges.shape, torch.nan)
        if keys.numel():
            pos = torch.searchsorted(keys, lookup).clamp(max=keys.numel() - 1)
            found = (edges >= 0) & (keys[pos] == lookup)
            step[found] = values[pos[found]]
        total = torch.zeros(n, dtype=torch.float32)
        for j in range(width):  # left to right, as the beam search accumulated them
            live = (padded[:, j] >= 0)
            total = torch.where(live, total + step[:, j], total)
        return total


def build_dict_trie(sequences: Sequence[Sequence[int]], eos_id: int) -> dict[int, dict]:
    """Nested-dict trie {token: subtrie} of `sequences` with EOS appended where missing (reference only)."""
    root: dict[int, dict] = {}
    for seq in sequences:
        seq = list(seq)
        if not seq or seq[-1] != eos_id:
            seq.append(eos_id)
        node = root
        for tok in seq:
            node = node.setdefault(tok, {})
    return root


def prefix_allowed_tokens_fn_for(trie: dict[int, dict], prefix_len: int, eos_id: int,
                                 pad_token_id: int | None = None) -> Callable[[int, torch.Tensor], list[int]]:
    """transformers `prefix_allowed_tokens_fn` over a dict trie: the standard DSI/NCI constraint, per beam.

    Same rule as `TrieLogitsProcessor`: the children of the prefix's node, or EOS/pad once the prefix
    ended or left the trie.
    """
    end_tokens = sorted({eos_id} | ({pad_token_id} if pad_token_id is not None else set()))

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        node = trie
        for tok in sent[prefix_len:].tolist():
            node = node.get(tok)
            if node is None:
                return end_tokens
        return list(node) or end_tokens

    return allowed


def _check_args(num_eds: int, num_beams: int, k: int | None, batch_size: int) -> int:
    """k clamped to the number of EDs, after checking the search arguments."""
    if num_eds == 0:
        raise ValueError("the trie is empty: index at least one ED before searching")
    if num_beams < 1 or batch_size < 1:
        raise ValueError(f"num_beams and batch_size must be >= 1, got {num_beams} and {batch_size}")
    k = num_beams if k is None else k
    if not 1 <= k <= num_beams:
        raise ValueError(f"k must lie in [1, num_beams={num_beams}], got {k}")
    return min(k, num_eds)


def _beam_batches(model, tokenizer, queries: Queries, *, num_beams: int, k: int, batch_size: int,
                  max_new_tokens: int, eos_id: int, pad_id: int, early_stopping: bool | str,
                  add_special_tokens: bool, constraint: Callable[[int, int], dict]):
    """Yield (query indices, generated ids [B, k, T], constraint kwargs) per batch of length-sorted queries."""
    encoded = _encode(tokenizer, queries, add_special_tokens)
    is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        padded = _pad([encoded[i] for i in batch], pad_id, left=not is_seq2seq, device=model.device)
        prefix_len = 1 if is_seq2seq else padded["input_ids"].shape[1]
        kwargs = constraint(prefix_len, len(batch))
        out = model.generate(
            **padded,
            num_beams=num_beams,
            num_return_sequences=k,
            do_sample=False,
            early_stopping=early_stopping,
            length_penalty=0.0,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            output_scores=False,
            return_dict_in_generate=False,
            **kwargs,
        )
        yield batch, out[:, prefix_len:].reshape(len(batch), k, -1).cpu(), kwargs


def _encode(tokenizer, queries: Queries, add_special_tokens: bool) -> list[list[int]]:
    """Model input ids per query: strings are tokenised, token-id lists are taken as they are."""
    queries = list(queries)
    is_text = [isinstance(q, str) for q in queries]
    if all(is_text):
        return [list(ids) for ids in tokenizer(queries, add_special_tokens=add_special_tokens)["input_ids"]]
    if any(is_text):
        raise TypeError("queries must be all strings or all token-id lists, not a mix")
    out = []
    for i, q in enumerate(queries):
        try:
            ids = [operator.index(t) for t in (q.tolist() if isinstance(q, torch.Tensor) else q)]
        except TypeError as err:
            raise TypeError(f"query {i} is neither a string nor a list of token ids: {q!r:.80}") from err
        if not ids or min(ids) < 0:
            raise ValueError(f"query {i} must be a non-empty list of non-negative token ids, got {ids[:20]}")
        out.append(ids)
    return out


def _pad(rows: list[list[int]], pad_id: int, left: bool, device) -> dict[str, torch.Tensor]:
    """input_ids + attention_mask, padded on the left (causal LM prompts) or right (encoder inputs)."""
    ids, mask = pad_rows(rows, pad_id, left=left, device=device)
    return {"input_ids": ids, "attention_mask": mask}


def _cut_at_eos(rows: torch.Tensor, eos_id: int) -> list[list[int]]:
    """Each row up to and including its first EOS; rows without EOS (cut by the length limit) become []."""
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(eos_id) + 1] if eos_id in row else [])
    return out


ENGINES = ("trie", "generate")


@torch.inference_mode()
def constrained_search(
    model, tokenizer, queries: Queries, trie: IdTrie, num_beams: int = 20, k: int | None = None,
    batch_size: int = 8, max_new_tokens: int | None = None, early_stopping: bool | str = True,
    add_special_tokens: bool = False, engine: str = "trie",
) -> list[list[Hit]]:
    """Per query, up to `k` (default `num_beams`, at most `len(trie)`) distinct EDs of `trie`, best first.

    Each hit is (ED token ids ending with EOS, sum of the model's log-probs of those tokens). `queries`
    are fully formatted input texts (encoded without special tokens unless `add_special_tokens`), or
    the model inputs already tokenised, one `list[int]` per query (causal LM: the prompt to continue;
    encoder-decoder: the encoder input ids), taken as they are.
    `max_new_tokens` defaults to the trie depth, enough for every ED. Beam search runs with
    `length_penalty=0` (scores are plain log-probs, so rankings match the returned scores).
    Fewer than `k` hits come back when the beams finish fewer distinct EDs.

    `engine="trie"` (default): `trie_beam_search`, our own beam search over trie children only; it is
    the exact textbook beam search (`early_stopping="never"` semantics; `early_stopping` is ignored).
    `engine="generate"`: `model.generate` with `TrieLogitsProcessor`, with `early_stopping` as given.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    k = _check_args(len(trie), num_beams, k, batch_size)
    if not queries:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else trie.eos_id
    if engine == "generate":
        return _generate_search(model, tokenizer, queries, trie, num_beams=num_beams, k=k, batch_size=batch_size,
                                max_new_tokens=max_new_tokens, early_stopping=early_stopping,
                                add_special_tokens=add_special_tokens, pad_id=pad_id)
    encoded = _encode(tokenizer, queries, add_special_tokens)
    device_trie = trie.to(model.device)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
    results: list[list[Hit]] = [[] for _ in encoded]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        found = trie_beam_search(model, [encoded[i] for i in batch], device_trie, num_beams=num_beams, k=k,
                                 max_new_tokens=max_new_tokens, pad_id=pad_id)
        for i, hits in zip(batch, found, strict=True):
            results[i] = hits
    return results


def _generate_search(model, tokenizer, queries: Queries, trie: IdTrie, *, num_beams: int, k: int, batch_size: int,
                     max_new_tokens: int | None, early_stopping: bool | str, add_special_tokens: bool,
                     pad_id: int) -> list[list[Hit]]:
    """`constrained_search` through `model.generate` + `TrieLogitsProcessor` (engine="generate")."""
    device_trie, trie = trie.to(model.device), trie.to("cpu")  # masking on the model's device, checks on CPU
    eos_id = trie.eos_id
    max_new_tokens = max_new_tokens or trie.depth

    def constraint(prefix_len: int, n: int) -> dict:
        proc = TrieLogitsProcessor(device_trie, prefix_len, pad_token_id=pad_id, num_beams=num_beams)
        return {"logits_processor": LogitsProcessorList([proc])}

    results: list[list[Hit]] = [[] for _ in queries]
    for batch, generated, kwargs in _beam_batches(
        model, tokenizer, queries, num_beams=num_beams, k=k, batch_size=batch_size,
        max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, early_stopping=early_stopping,
        add_special_tokens=add_special_tokens, constraint=constraint,
    ):
        proc: TrieLogitsProcessor = kwargs["logits_processor"][0]
        seqs = [_cut_at_eos(generated[b], eos_id) for b in range(len(batch))]
        flat = [s for per_query in seqs for s in per_query]
        members = trie.contains_batch([s if s else [-1] for s in flat]).tolist()
        query_of = [b for b in range(len(batch)) for _ in range(k)]
        scores = proc.sequence_scores(query_of, [s if m else [] for s, m in zip(flat, members)]).tolist()
        for b, i in enumerate(batch):
            seen, hits = set(), []
            for j in range(k):
                pos = b * k + j
                seq, score = flat[pos], scores[pos]
                # Beam search may fill k slots with non-trie or repeated rows when fewer EDs were reachable
                # (beams at -inf); those are dropped. A member always has a recorded, finite score.
                if not members[pos] or tuple(seq) in seen or not math.isfinite(score):
                    continue
                seen.add(tuple(seq))
                hits.append((seq, score))
            hits.sort(key=lambda h: -h[1])  # stable: ties keep the beam search's order
            results[i] = hits
    return results


# ------------------------------------------------------------------------------- trie beam search
@torch.inference_mode()
def trie_beam_search(model, inputs: Sequence[Sequence[int]], trie: IdTrie, *, num_beams: int, k: int | None = None,
                     max_new_tokens: int | None = None, pad_id: int | None = None) -> list[list[Hit]]:
    """Exact trie-constrained beam search for one batch of tokenised `inputs`: per input, up to `k` hits.

    A beam is a trie node (its prefix) with a score, the sum of its tokens' log-probs. Each step scores
    only the trie children of the live beams: ``score + logit[token] - logsumexp(logits)``, one gather
    per (beam, child) pair, never a [beams, vocab] mask nor a top-k over beams * vocab. Per input, among
    the candidates of its beams (scattered into a padded [inputs, widest] grid): the EOS candidates
    ranked within the top `num_beams` finish (as in transformers' beam search), and the `num_beams`
    best other candidates are the next beams, except those scoring at or below the input's k-th
    finished ED: log-probs only decrease, so their EDs could not enter its top k, and removing
    candidates below a candidate does not change its rank, so the top k is the one the full search
    (transformers' `early_stopping="never"`) returns. An input is done when it has no beam left, and
    its rows leave the batch: model rows are the live beams only (ragged, query-major), and the KV
    cache follows them by `reorder_cache`. The prompt is run once per input, not once per beam.

    Causal LMs get the inputs left-padded with positions ``cumsum(mask) - 1`` as `generate` computes
    them; encoder-decoders run the encoder once and decode from `decoder_start_token_id`.
    """
    k = _check_args(len(trie), num_beams, k, batch_size=1)
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
        model, _pad(inputs, eos_id if pad_id is None else pad_id,
                    left=not getattr(model.config, "is_encoder_decoder", False), device=device))
    logits = decoder.logits
    if trie.key_base > logits.shape[-1] and int(trie.child_tokens.max()) >= logits.shape[-1]:
        raise ValueError(f"the trie holds token ids up to {int(trie.child_tokens.max())}, "
                         f"beyond the model's {logits.shape[-1]} scores")

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
        new_fin = torch.where(grid_eos.gather(1, best_at), best, neg_inf)
        new_node = edges[grid_cand.gather(1, best_at)] + 1
        fin_score, pick = torch.cat([fin_score, new_fin], 1).topk(k, dim=1)
        fin_node = torch.cat([fin_node, new_node], 1).gather(1, pick)

        # The num_beams best non-EOS candidates run on, except those at or below the input's k-th finished
        # ED: their EDs could not enter its top k, and dropping them moves no better candidate's rank.
        run, run_at = grid.masked_fill(grid_eos, -math.inf).topk(top, dim=1)
        keep = run > fin_score[:, -1:]  # -inf (no candidate) never passes
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


@torch.inference_mode()
def reference_search(
    model, tokenizer, queries: Queries, dict_trie: dict[int, dict], eos_id: int, num_beams: int = 20,
    k: int | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
    early_stopping: bool | str = True, add_special_tokens: bool = False,
) -> list[list[list[int]]]:
    """The same search through `prefix_allowed_tokens_fn` over `dict_trie` (see `build_dict_trie`): the
    baseline. Per query the distinct EDs in the beam search's order, without scores."""
    num_eds, depth = _dict_stats(dict_trie, eos_id)
    k = _check_args(num_eds, num_beams, k, batch_size)
    if not queries:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id

    def constraint(prefix_len: int, n: int) -> dict:
        return {"prefix_allowed_tokens_fn": prefix_allowed_tokens_fn_for(dict_trie, prefix_len, eos_id, pad_id)}

    results: list[list[list[int]]] = [[] for _ in queries]
    for batch, generated, _ in _beam_batches(
        model, tokenizer, queries, num_beams=num_beams, k=k, batch_size=batch_size,
        max_new_tokens=max_new_tokens or depth, eos_id=eos_id, pad_id=pad_id,
        early_stopping=early_stopping, add_special_tokens=add_special_tokens, constraint=constraint,
    ):
        for b, i in enumerate(batch):
            seen, hits = set(), []
            for seq in _cut_at_eos(generated[b], eos_id):
                if seq and tuple(seq) not in seen and _dict_contains(dict_trie, seq):
                    seen.add(tuple(seq))
                    hits.append(seq)
            results[i] = hits
    return results


def _dict_stats(trie: dict[int, dict], eos_id: int) -> tuple[int, int]:
    """(number of sequences, longest sequence with EOS) of a dict trie."""
    count, depth, stack = 0, 0, [(trie, 0)]
    while stack:
        node, level = stack.pop()
        for tok, child in node.items():
            if tok == eos_id:
                count += 1
                depth = max(depth, level + 1)
            stack.append((child, level + 1))
    return count, depth


def _dict_contains(trie: dict[int, dict], seq: Sequence[int]) -> bool:
    node = trie
    for tok in seq:
        node = node.get(tok)
        if node is None:
            return False
    return len(seq) > 0 and not node  # only EOS edges lead to empty (leaf) dicts
