"""Trie-constrained search: decode the EDs (document identifiers) a model ranks highest for a query
(SE-DSI, Tang et al., KDD 2023, arXiv 2305.15115, Sec. 3.4: inference is beam search constrained to the
prefix tree of the EDs).

Two engines run the same search, restricted to the paths of an `IdTrie`:

- `trie_beam_search` (`engine="trie"`, the default; components/sedsi/beam_search.py): our own exact
  beam search over trie children only;
- `TrieLogitsProcessor` + `model.generate` (`engine="generate"`; components/sedsi/logits_processor.py):
  transformers' beam search with a vectorised trie mask.
The dict-trie `prefix_allowed_tokens_fn` baseline lives in bench/bench_sedsi_reference.py (benchmark and
tests only).

Both work for causal LMs (left-padded prompts) and encoder-decoders alike, take queries as texts or as
token-id lists, and return per query the distinct EOS-terminated EDs with their scores, best first. The
score is the length-normalised log-probability `sum log p / len ** length_penalty` (decoding.py), as
`generate` ranks finished hypotheses; `length_penalty=1.0` is `generate`'s default and the reference
code's setting, 0.0 gives plain sums.

Semantics (both engines): transformers' beam search. Per step the EOS candidates ranked (by summed
log-prob) within a query's top `num_beams` finish, with their normalised score; the `num_beams` best
other candidates run on. The trie engine drops a running beam once even its best possible finish
(its sum divided by the longest ED length ** length_penalty, for length_penalty > 0) cannot beat the
query's k-th finished score, so its top k is that of the full search (`early_stopping="never"`).

Example::

    trie = IdTrie.build([tokenizer(ed, add_special_tokens=False)["input_ids"] for ed in eds],
                        eos_id=tokenizer.eos_token_id)
    hits = constrained_search(model, tokenizer, ["<query text>"], trie, num_beams=20, k=10)
    for ed_ids, score in hits[0]:
        print(tokenizer.decode(ed_ids, skip_special_tokens=True), score)
"""

from __future__ import annotations

import torch

from components.sedsi.beam_search import trie_beam_search
from components.sedsi.decoding import Hit, Queries, check_args, encode
from components.sedsi.logits_processor import TrieLogitsProcessor, generate_search
from components.sedsi.trie import IdTrie

__all__ = ["ENGINES", "Hit", "TrieLogitsProcessor", "constrained_search", "trie_beam_search"]

ENGINES = ("trie", "generate")


@torch.inference_mode()
def constrained_search(
    model, tokenizer, queries: Queries, trie: IdTrie, num_beams: int = 20, k: int | None = None,
    batch_size: int = 8, max_new_tokens: int | None = None, early_stopping: bool | str = "never",
    add_special_tokens: bool = False, engine: str = "trie", length_penalty: float = 1.0,
) -> list[list[Hit]]:
    """Per query, up to `k` (default `num_beams`, at most `len(trie)`) distinct EDs of `trie`, best first.

    Each hit is (ED token ids ending with EOS, summed log-prob / len ** length_penalty). `queries` are
    fully formatted input texts (encoded without special tokens unless `add_special_tokens`), or the
    model inputs already tokenised, one `list[int]` per query (causal LM: the prompt to continue;
    encoder-decoder: the encoder input ids), taken as they are. `max_new_tokens` defaults to the trie
    depth, enough for every ED. Fewer than `k` hits come back when the beams finish fewer distinct EDs.

    `engine="trie"` (default): `trie_beam_search`, the exact beam search (`early_stopping="never"`
    semantics; `early_stopping` is ignored). `engine="generate"`: `model.generate` with
    `TrieLogitsProcessor`, with `early_stopping` as given (default "never": the exact search; with
    `True` and `length_penalty > 0` transformers can fill its finished slots with the -1e9 copies of
    real prefixes that a narrow trie root leaves, and stop before every reachable ED finished).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    k = check_args(len(trie), num_beams, k, batch_size)
    if not queries:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else trie.eos_id
    if engine == "generate":
        return generate_search(model, tokenizer, queries, trie, num_beams=num_beams, k=k, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, early_stopping=early_stopping,
                               add_special_tokens=add_special_tokens, pad_id=pad_id, length_penalty=length_penalty)
    encoded = encode(tokenizer, queries, add_special_tokens)
    device_trie = trie.to(model.device)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
    results: list[list[Hit]] = [[] for _ in encoded]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        found = trie_beam_search(model, [encoded[i] for i in batch], device_trie, num_beams=num_beams, k=k,
                                 max_new_tokens=max_new_tokens, pad_id=pad_id, length_penalty=length_penalty)
        for i, hits in zip(batch, found, strict=True):
            results[i] = hits
    return results
