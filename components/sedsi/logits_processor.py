"""Trie-constrained decoding through transformers' `generate`: `TrieLogitsProcessor` masks, at every
step, the scores of all tokens that do not extend a beam's prefix in the `IdTrie`
(`constrained_search(engine="generate")`).

Design notes:
- The processor walks each beam's whole generated prefix at every step instead of keeping a node per
  beam: logits processors are not told how beams were reordered, and a walk of the <= ~25 generated
  tokens costs one `searchsorted` per column over all beams (microseconds), far below the full
  [beams, vocab] pass that masking costs anyway. It is stateless and so robust to beam reordering,
  finished beams and padding.
- Scores: asking transformers for them (`output_scores=True`) would copy the full [beams, vocab] scores
  at every step, so the processor instead records the log-prob of each allowed token per (query, trie
  edge) as it masks, and `generate_search` sums those along each returned ED (same float32 additions in
  the same order as the beam search) and divides by ``len(ED) ** length_penalty`` as `generate` does.
- `early_stopping=True` ends a query's search once `num_beams` EDs have finished.
  `early_stopping="never"` (constrained_search's default) is the exact beam search: it stops only when no running
  beam can still beat the worst finished ED (for `length_penalty > 0` bounded by the longest length).
- Beams 1.. start at -1e9 in transformers' beam search; where fewer tokens are allowed than beams are
  kept (a narrow trie root, more beams than EDs), such copies of real prefixes run along and can
  finish. They are trie members, so they are kept with their true score (deduplicated), which is
  why results are re-sorted by score rather than taken in the beam search's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from components.sedsi.decoding import Hit, Queries, cut_at_eos, encode, length_normalised, pad
from components.sedsi.trie import IdTrie


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


def beam_batches(model, tokenizer, queries: Queries, *, num_beams: int, k: int, batch_size: int,
                 max_new_tokens: int, eos_id: int, pad_id: int, early_stopping: bool | str,
                 add_special_tokens: bool, constraint: Callable[[int, int], dict], length_penalty: float = 0.0):
    """Yield (query indices, generated ids [B, k, T], constraint kwargs) per batch of length-sorted queries."""
    encoded = encode(tokenizer, queries, add_special_tokens)
    is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        padded = pad([encoded[i] for i in batch], pad_id, left=not is_seq2seq, device=model.device)
        prefix_len = 1 if is_seq2seq else padded["input_ids"].shape[1]
        kwargs = constraint(prefix_len, len(batch))
        out = model.generate(
            **padded,
            num_beams=num_beams,
            num_return_sequences=k,
            do_sample=False,
            early_stopping=early_stopping,
            length_penalty=length_penalty,
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


def generate_search(model, tokenizer, queries: Queries, trie: IdTrie, *, num_beams: int, k: int, batch_size: int,
                    max_new_tokens: int | None, early_stopping: bool | str, add_special_tokens: bool,
                    pad_id: int, length_penalty: float = 1.0) -> list[list[Hit]]:
    """`constrained_search` through `model.generate` + `TrieLogitsProcessor` (engine="generate")."""
    device_trie, trie = trie.to(model.device), trie.to("cpu")  # masking on the model's device, checks on CPU
    eos_id = trie.eos_id
    max_new_tokens = max_new_tokens or trie.depth

    def constraint(prefix_len: int, n: int) -> dict:
        proc = TrieLogitsProcessor(device_trie, prefix_len, pad_token_id=pad_id, num_beams=num_beams)
        return {"logits_processor": LogitsProcessorList([proc])}

    results: list[list[Hit]] = [[] for _ in queries]
    for batch, generated, kwargs in beam_batches(
        model, tokenizer, queries, num_beams=num_beams, k=k, batch_size=batch_size,
        max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, early_stopping=early_stopping,
        add_special_tokens=add_special_tokens, constraint=constraint, length_penalty=length_penalty,
    ):
        proc: TrieLogitsProcessor = kwargs["logits_processor"][0]
        seqs = [cut_at_eos(generated[b], eos_id) for b in range(len(batch))]
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
                hits.append((seq, length_normalised(score, len(seq), length_penalty)))
            hits.sort(key=lambda h: -h[1])  # stable: ties keep the beam search's order
            results[i] = hits
    return results


