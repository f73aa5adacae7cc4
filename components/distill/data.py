"""Training examples for distillation: prompt ids + response ids, labels on the response, span pairs.

Example::

    examples, report = build_examples(tokenizer, prompt_ids, response_ids, DistillConfig(),
                                      supervised=[True, False], targets=[None, teacher_ids])
    batch = collate(examples[:4], pad_id=tokenizer.pad_token_id)   # right-padded tensors

SFT targets: an example's `response` is what every KD term trains on; the SFT term trains on it only
when `supervised` (it is the teacher's response or a reference). A student-sampled response (SCRG, online,
GKD) is never an SFT target: such an example may carry a separate `target` (the teacher's response or
the reference for its prompt), which collate lays out as a second, SFT-only batch (`sft_*` keys).

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
    supervised: bool = True  # the response itself is a supervision target (SFT trains on it)
    target: list[int] | None = None  # the SFT target when the response is not one (None: no SFT term)


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
    chunker: PhraseChunker | None = None, supervised: list[bool] | None = None,
    targets: list[list[int] | None] | None = None,
) -> tuple[list[Example], BuildReport]:
    """Pair prompt ids with response ids (EOS included when the response ended) and mark span pairs.
    `supervised[i]`: response i is a supervision target (default: all); `targets[i]`: the SFT target of
    an unsupervised row (None: that row has no SFT term)."""
    if not prompts:
        raise DistillDataError("the training split is empty: no prompt to distil on")
    n = len(prompts)
    supervised = [True] * n if supervised is None else list(supervised)
    targets = [None] * n if targets is None else list(targets)
    report = BuildReport()
    examples = []
    for prompt, response, sup, target in zip(prompts, responses, supervised, targets, strict=True):
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
        target = list(target[:room]) if (target is not None and not sup) else None
        examples.append(Example(prompt=list(prompt), response=list(response), pairs=pairs, supervised=bool(sup),
                                target=target or None))
    return examples, report


def _pad(seqs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt, response) pairs -> right-padded input_ids, attention_mask, labels (IGNORE off the response)."""
    width = max(len(p) + len(r) for p, r in seqs)
    shape = (len(seqs), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    for b, (prompt, response) in enumerate(seqs):
        p, r = len(prompt), len(response)
        ids[b, : p + r] = torch.tensor(prompt + response, dtype=torch.long)
        mask[b, : p + r] = 1
        if r:
            labels[b, p : p + r] = torch.tensor(response, dtype=torch.long)
    return ids, mask, labels


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (IGNORE off the response), pair_start,
    sft_row [B] (the response is an SFT target); plus sft_input_ids, sft_attention_mask, sft_labels for
    the separate SFT targets of unsupervised rows, when any has one."""
    ids, mask, labels = _pad([(e.prompt, e.response) for e in examples], pad_id)
    pairs = torch.zeros(ids.shape, dtype=torch.bool)
    for b, e in enumerate(examples):
        if e.response:
            pairs[b, len(e.prompt) : len(e.prompt) + len(e.response)] = torch.tensor(e.pairs, dtype=torch.bool)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pair_start": pairs,
             "sft_row": torch.tensor([e.supervised for e in examples], dtype=torch.bool)}
    extra = [(e.prompt, e.target) for e in examples if not e.supervised and e.target]
    if extra:
        batch["sft_input_ids"], batch["sft_attention_mask"], batch["sft_labels"] = _pad(extra, pad_id)
    return batch


def response_ids(tokenizer, texts: list[str], finished: list[bool]) -> list[list[int]]:
    """Token ids of response texts, with the EOS token appended where the response ended with one, so
    the student also learns where to stop."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer([t or "" for t in texts], add_special_tokens=False)["input_ids"]
    return [ids + ([eos] if done and eos is not None else []) for ids, done in zip(encoded, finished, strict=True)]


def calibration_batches(tokenizer, responses, generation, rows: int, max_tokens: int = 256,
                        batch_size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `rows` training prompts with the teacher's answers, rendered and tokenised as the
    student will train on them (at most `max_tokens` each), as right-padded (input_ids, attention_mask)
    batches: the calibration data layer selection ranks the teacher's layers on."""
    from components.generation import format_prompts

    table = responses[responses["split"] == "train"].head(rows)
    if table.empty:
        raise DistillDataError("layer selection needs training prompts: the training split is empty")
    rendered = format_prompts(tokenizer, table["instruction"].tolist(), table["input"].tolist(), generation.system_prompt)
    prompts, _ = tokenize_prompts(tokenizer, rendered, generation.max_prompt_tokens)
    answers = response_ids(tokenizer, table["response"].tolist(), table["finished"].tolist())
    seqs = [(p + a)[:max_tokens] for p, a in zip(prompts, answers, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, s in enumerate(chunk):
            ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[b, : len(s)] = 1
        out.append((ids, mask))
    return out
