"""Training examples for distillation: prompt ids + response ids, labels on the response, span pairs.

Example::

    examples, report = build_examples(tokenizer, prompt_texts, response_ids, DistillConfig(), max_prompt_tokens=512)
    batch = collate(examples[:4], pad_id=tokenizer.pad_token_id)   # right-padded tensors

Rules for long inputs (counted in `report`):
- a prompt over `max_prompt_tokens` keeps its last tokens (as teacher generation does), or raises
  when `on_long_prompt` is "fail";
- prompt + response over `max_seq_tokens` keeps the start of the response and cuts its end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.distill.losses import IGNORE
from components.distill.spans import PhraseChunker, pair_starts
from semflow.config import DistillConfig


class DistillDataError(ValueError):
    """Training data that cannot be used (empty split, prompt too long under on_long_prompt=fail)."""


@dataclass
class Example:
    prompt: list[int]
    response: list[int]
    pairs: list[bool]  # per response token: it and the next token lie in one phrase span


@dataclass
class BuildReport:
    prompts_truncated: int = 0
    responses_cut: int = 0
    empty_responses: int = 0


def tokenize_prompts(tokenizer, texts: list[str], max_prompt_tokens: int, on_long: str = "truncate",
                     ids: list[str] | None = None) -> tuple[list[list[int]], int]:
    """Token ids of rendered prompts (the chat template already added BOS and role markers)."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    long = [k for k, e in enumerate(encoded) if len(e) > max_prompt_tokens]
    if long and on_long == "fail":
        names = [ids[k] if ids else k for k in long[:5]]
        raise DistillDataError(
            f"{len(long)} prompts exceed generation.max_prompt_tokens={max_prompt_tokens} "
            f"(first: {names}); raise the limit or set generation.on_long_prompt=truncate"
        )
    return [e[-max_prompt_tokens:] for e in encoded], len(long)


def build_examples(
    tokenizer, prompts: list[list[int]], responses: list[list[int]], cfg: DistillConfig,
    chunker: PhraseChunker | None = None,
) -> tuple[list[Example], BuildReport]:
    """Pair prompt ids with response ids (EOS included when the response ended) and mark span pairs."""
    if not prompts:
        raise DistillDataError("the training split is empty: no prompt to distil on")
    report = BuildReport()
    examples = []
    for prompt, response in zip(prompts, responses, strict=True):
        room = cfg.max_seq_tokens - len(prompt)
        if room <= 0:
            raise DistillDataError(
                f"a prompt of {len(prompt)} tokens leaves no room under distill.max_seq_tokens="
                f"{cfg.max_seq_tokens}; lower generation.max_prompt_tokens or raise max_seq_tokens"
            )
        if len(response) > room:
            response = response[:room]
            report.responses_cut += 1
        if not response:
            report.empty_responses += 1
        pairs = pair_starts(tokenizer, response, chunker) if chunker and response else [False] * len(response)
        examples.append(Example(prompt=list(prompt), response=list(response), pairs=pairs))
    return examples, report


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (IGNORE off the response), pair_start."""
    width = max(len(e.prompt) + len(e.response) for e in examples)
    shape = (len(examples), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    pairs = torch.zeros(shape, dtype=torch.bool)
    for b, e in enumerate(examples):
        p, r = len(e.prompt), len(e.response)
        ids[b, : p + r] = torch.tensor(e.prompt + e.response, dtype=torch.long)
        mask[b, : p + r] = 1
        if r:
            labels[b, p : p + r] = torch.tensor(e.response, dtype=torch.long)
            pairs[b, p : p + r] = torch.tensor(e.pairs, dtype=torch.bool)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pair_start": pairs}


def response_ids(tokenizer, texts: list[str], finished: list[bool]) -> list[list[int]]:
    """Token ids of response texts, with the EOS token appended where the response ended with one, so
    the student also learns where to stop."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer([t or "" for t in texts], add_special_tokens=False)["input_ids"]
    return [ids + ([eos] if done and eos is not None else []) for ids, done in zip(encoded, finished, strict=True)]
