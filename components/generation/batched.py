"""Left-padded batched `model.generate` with the tokenizer's chat template, greedy or sampled.

Prompts are sorted by length before batching so each batch pads little, and results come back in the
caller's order. Each batch draws its random numbers from `seed + batch index`, so the same prompts and
config give the same output on CPU whatever ran before in the process.

A prompt longer than `max_prompt_tokens` keeps its last tokens (the chat template's assistant header
and the end of the instruction matter most for what comes next); how many were cut is reported per row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from semflow.config import GenerationConfig


@dataclass
class GenerationOutput:
    texts: list[str]
    token_ids: list[list[int]]  # generated ids before EOS
    prompt_tokens: list[int]  # after truncation
    new_tokens: list[int]  # generated tokens before EOS (EOS itself not counted)
    finished: list[bool]  # ended with EOS rather than max_new_tokens
    truncated: list[int]  # prompt tokens cut from the left
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0


def format_prompts(tokenizer, instructions: list[str], inputs: list[str], system_prompt: str | None = None) -> list[str]:
    """Render instruction (+ input) through the chat template, or as plain text when there is none."""
    rendered = []
    for instruction, extra in zip(instructions, inputs, strict=True):
        content = f"{instruction}\n\n{extra}" if extra else instruction
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
            messages.append({"role": "user", "content": content})
            rendered.append(
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        else:
            prefix = f"{system_prompt}\n\n" if system_prompt else ""
            rendered.append(f"{prefix}{content}\n\n")
    return rendered


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def generate(
    model, tokenizer, prompts: list[str], cfg: GenerationConfig, progress: bool = True
) -> GenerationOutput:
    """Generate one response per rendered prompt (see format_prompts)."""
    # The chat template already wrote BOS and role markers: do not let the tokenizer add them again.
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    truncated = [max(0, len(ids) - cfg.max_prompt_tokens) for ids in encoded]
    encoded = [ids[-cfg.max_prompt_tokens :] for ids in encoded]
    eos = _eos_ids(model, tokenizer)
    if not eos:
        raise ValueError("the model has no EOS token: set generation_config.eos_token_id")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)

    sample_kwargs = {}
    if cfg.do_sample:
        sample_kwargs = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or None)

    n = len(prompts)
    texts, new_tokens, finished = [""] * n, [0] * n, [False] * n
    token_ids: list[list[int]] = [[] for _ in range(n)]
    order = sorted(range(n), key=lambda i: -len(encoded[i]))
    batches = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    generated = 0
    bar = tqdm(total=n, desc="generate", unit="prompt", disable=not progress)
    start = time.perf_counter()
    for b, batch in enumerate(batches):
        padded = tokenizer.pad(
            {"input_ids": [encoded[i] for i in batch]}, padding=True, padding_side="left",
            return_tensors="pt",
        ).to(model.device)
        torch.manual_seed(cfg.seed + b)
        out = model.generate(
            **padded,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=cfg.do_sample,
            pad_token_id=pad_id,
            eos_token_id=sorted(eos),
            **sample_kwargs,
        )
        continuation = out[:, padded["input_ids"].shape[1] :].tolist()
        for i, tokens in zip(batch, continuation, strict=True):
            stop = next((k for k, t in enumerate(tokens) if t in eos), None)
            kept = tokens if stop is None else tokens[:stop]
            token_ids[i] = kept
            texts[i] = tokenizer.decode(kept, skip_special_tokens=True).strip()
            new_tokens[i], finished[i] = len(kept), stop is not None
            generated += len(kept)
        bar.update(len(batch))
        bar.set_postfix(tok_s=f"{generated / (time.perf_counter() - start):.1f}")
    bar.close()
    return GenerationOutput(
        texts=texts,
        token_ids=token_ids,
        prompt_tokens=[len(ids) for ids in encoded],
        new_tokens=new_tokens,
        finished=finished,
        truncated=truncated,
        seconds=time.perf_counter() - start,
    )
