"""The dict-trie baseline of constrained decoding (the usual DSI/NCI approach): a nested-dict trie walked in
Python for each beam through transformers' `prefix_allowed_tokens_fn`. Not part of the product: the
decoding benchmark (bench/bench_sedsi_decode.py) times it, and the trie tests check that both engines of
components.sedsi rank like it.

    ref = reference_search(model, tokenizer, queries, build_dict_trie(eds, eos_id), eos_id, num_beams=10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from components.sedsi.decoding import Queries, check_args, cut_at_eos
from components.sedsi.logits_processor import beam_batches


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


@torch.inference_mode()
def reference_search(
    model, tokenizer, queries: Queries, dict_trie: dict[int, dict], eos_id: int, num_beams: int = 20,
    k: int | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
    early_stopping: bool | str = True, add_special_tokens: bool = False, length_penalty: float = 1.0,
) -> list[list[list[int]]]:
    """The same search through `prefix_allowed_tokens_fn` over `dict_trie` (see `build_dict_trie`): the
    baseline. Per query the distinct EDs in the beam search's order, without scores."""
    num_eds, depth = _dict_stats(dict_trie, eos_id)
    k = check_args(num_eds, num_beams, k, batch_size)
    if not queries:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id

    def constraint(prefix_len: int, n: int) -> dict:
        return {"prefix_allowed_tokens_fn": prefix_allowed_tokens_fn_for(dict_trie, prefix_len, eos_id, pad_id)}

    results: list[list[list[int]]] = [[] for _ in queries]
    for batch, generated, _ in beam_batches(
        model, tokenizer, queries, num_beams=num_beams, k=k, batch_size=batch_size,
        max_new_tokens=max_new_tokens or depth, eos_id=eos_id, pad_id=pad_id,
        early_stopping=early_stopping, add_special_tokens=add_special_tokens, constraint=constraint,
        length_penalty=length_penalty,
    ):
        for b, i in enumerate(batch):
            seen, hits = set(), []
            for seq in cut_at_eos(generated[b], eos_id):
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
