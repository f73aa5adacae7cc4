"""What both constrained-search engines share: argument checks, query encoding, padding, EOS cuts and
the length-normalised score that ranks EDs.

A hit is (ED token ids ending with EOS, score). The score is the ED's summed token log-probabilities
divided by ``len(ids) ** length_penalty`` (`length_normalised`), exactly as transformers' beam search
scores a finished hypothesis (`_update_finished_beams`: the generated length counts the EOS); with
`length_penalty=1.0` (`generate`'s default, the setting of the SE-DSI reference code) that is the mean
token log-probability, with 0.0 the plain sum, which favours short EDs.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from components.generation.padding import pad_rows

Hit = tuple[list[int], float]
Queries = Sequence[str] | Sequence[Sequence[int]]  # input texts, or the model's input token ids per query


def length_normalised(score: float, length: int, length_penalty: float) -> float:
    """`score / length ** length_penalty`: a finished hypothesis's score in transformers' beam search."""
    return score / (length ** length_penalty)


def check_args(num_eds: int, num_beams: int, k: int | None, batch_size: int) -> int:
    """k clamped to the number of EDs, after checking the search arguments."""
    if num_eds == 0:
        raise ValueError("the trie is empty: index at least one ED before searching")
    if num_beams < 1 or batch_size < 1:
        raise ValueError(f"num_beams and batch_size must be >= 1, got {num_beams} and {batch_size}")
    k = num_beams if k is None else k
    if not 1 <= k <= num_beams:
        raise ValueError(f"k must lie in [1, num_beams={num_beams}], got {k}")
    return min(k, num_eds)



def encode(tokenizer, queries: Queries, add_special_tokens: bool) -> list[list[int]]:
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


def pad(rows: list[list[int]], pad_id: int, left: bool, device) -> dict[str, torch.Tensor]:
    """input_ids + attention_mask, padded on the left (causal LM prompts) or right (encoder inputs)."""
    ids, mask = pad_rows(rows, pad_id, left=left, device=device)
    return {"input_ids": ids, "attention_mask": mask}


def cut_at_eos(rows: torch.Tensor, eos_id: int) -> list[list[int]]:
    """Each row up to and including its first EOS; rows without EOS (cut by the length limit) become []."""
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(eos_id) + 1] if eos_id in row else [])
    return out


