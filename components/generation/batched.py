"""Left-padded batched generation with the tokenizer's chat template, greedy or sampled.

Three engines compute the same function: `plain` calls `model.generate`; `static` runs the decode loop
of components.generation.static (static KV cache, one CUDA graph per step on GPU); `fused` runs that
loop with components.generation.fused's own Llama step (fused projections, packed GQA, compiled on
CUDA), one decoder sized for the longest prompt so every batch reuses its compiled shape. `auto` (the
default) takes the static one on CUDA and the plain one on CPU.

Prompts are sorted by length before batching so each batch pads little, and results come back in the
caller's order. Each batch draws its random numbers from `seed + batch index`, so the same prompts and
config give the same output on CPU whatever ran before in the process.

A prompt longer than `max_prompt_tokens` keeps its last tokens (the chat template's assistant header
and the end of the instruction matter most for what comes next); how many were cut is reported per row.
With `on_long_prompt: fail` such a prompt raises PromptTooLongError before any decoding.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from components.generation.fused import FusedDecoder, supports_fused
from components.generation.padding import pad_rows
from components.generation.static import Sampling, StaticDecoder, static_length, supports_static
from components.rng import seeded
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


def resolve_engine(model, engine: str) -> str:
    """`auto` takes the static path on CUDA when the model supports it and the plain one otherwise."""
    if engine == "plain":
        return "plain"
    reason = supports_static(model)
    if engine in ("static", "fused"):
        reason = reason or (supports_fused(model) if engine == "fused" else None)
        if reason:
            raise ValueError(f"generation.engine={engine} cannot run this model: {reason}")
        return engine
    if engine != "auto":
        raise ValueError(f"engine must be auto, plain, static or fused, got {engine!r}")
    return "static" if model.device.type == "cuda" and reason is None else "plain"


@torch.inference_mode()
def decode_batches(
    model, prompts: list[list[int]], *, max_new_tokens: int, sampling: Sampling, eos: list[int], pad_id: int,
    batch_size: int, seed: int, engine: str = "auto", progress: bool = False, desc: str = "generate",
) -> list[list[int]]:
    """One continuation per prompt (token ids; EOS kept when the row ended with it), in the caller's order.

    Prompts are sorted by length (longest first) so each batch pads little; batch k draws its random
    numbers from `seed + k`. `engine` picks `model.generate` (plain), the static-cache decode loop
    (static; CUDA graphs on GPU) or the fused step (fused); greedy decoding gives the same tokens on all."""
    engine = resolve_engine(model, engine)
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    decoder: StaticDecoder | None = None
    if engine == "fused" and prompts:  # one shape for every batch: a new shape would compile the step again
        decoder = FusedDecoder(model, min(batch_size, len(prompts)), static_length(
            max(len(p) for p in prompts), max_new_tokens), sampling, eos, pad_id)
    generated, start = 0, time.perf_counter()
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress)
    for k, batch in enumerate(batches):
        rows = [prompts[i] for i in batch]
        # sampling draws from seed + k alone, whatever else this process runs (components.rng); greedy
        # decoding draws nothing and takes no lock
        with seeded(seed + k) if sampling.do_sample else nullcontext():
            if engine == "fused":
                continuations = decoder.generate(rows, max_new_tokens)
            elif engine == "static":
                max_len = static_length(max(len(r) for r in rows), max_new_tokens)
                if decoder is None or decoder.max_len != max_len:
                    decoder = None  # free the previous cache before allocating the next
                    decoder = StaticDecoder(model, min(batch_size, len(prompts)), max_len, sampling, eos, pad_id)
                continuations = decoder.generate(rows, max_new_tokens)
            else:
                continuations = _plain(model, rows, max_new_tokens, sampling, eos, pad_id)
        for i, tokens in zip(batch, continuations, strict=True):
            out[i] = tokens
            generated += len(tokens)
        bar.update(len(batch))
        bar.set_postfix(tok_s=f"{generated / (time.perf_counter() - start):.1f}")
    bar.close()
    return out


def _plain(model, rows: list[list[int]], max_new_tokens: int, sampling: Sampling, eos: list[int],
           pad_id: int) -> list[list[int]]:
    ids, mask = pad_rows(rows, pad_id, device=model.device)
    width = ids.shape[1]
    kwargs = {}
    if sampling.do_sample:
        kwargs = dict(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
    generated = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
        do_sample=sampling.do_sample, pad_token_id=pad_id, eos_token_id=eos, **kwargs,
    )
    eos_set = set(eos)
    result = []
    for tokens in generated[:, width:].tolist():
        stop = next((k for k, t in enumerate(tokens) if t in eos_set), None)
        result.append(tokens if stop is None else tokens[: stop + 1])
    return result


def sampling_of(cfg) -> Sampling:
    """The sampling settings of a GenerationConfig or ScrgConfig."""
    return Sampling(do_sample=cfg.do_sample, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)


class PromptTooLongError(ValueError):
    """A prompt over generation.max_prompt_tokens under on_long_prompt=fail."""


def answer_prompts(model, tokenizer, prompts: pd.DataFrame, cfg: GenerationConfig,
                   progress: bool = True) -> tuple[pd.DataFrame, dict[str, float]]:
    """The teacher-generation stage's work: `prompts` (instruction, input, ...) plus `response,
    prompt_tokens, response_tokens, finished, prompt_tokens_cut`, and the stage's metrics."""
    rendered = format_prompts(tokenizer, prompts["instruction"].tolist(), prompts["input"].tolist(),
                              cfg.system_prompt)
    out = generate(model, tokenizer, rendered, cfg, progress=progress)
    responses = prompts.assign(response=out.texts, prompt_tokens=out.prompt_tokens, response_tokens=out.new_tokens,
                               finished=out.finished, prompt_tokens_cut=out.truncated)
    n = max(len(responses), 1)
    metrics = {
        "responses": float(len(responses)),
        "tokens_per_second": out.tokens_per_second,
        "generation_seconds": out.seconds,
        "response_tokens_total": float(sum(out.new_tokens)),
        "response_tokens_mean": sum(out.new_tokens) / n,
        "finished_share": sum(out.finished) / n,
        "prompts_truncated": float(sum(1 for t in out.truncated if t)),
    }
    return responses, metrics


def generate(
    model, tokenizer, prompts: list[str], cfg: GenerationConfig, progress: bool = True
) -> GenerationOutput:
    """Generate one response per rendered prompt (see format_prompts)."""
    # The chat template already wrote BOS and role markers: do not let the tokenizer add them again.
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    truncated = [max(0, len(ids) - cfg.max_prompt_tokens) for ids in encoded]
    too_long = [k for k, cut in enumerate(truncated) if cut]
    if too_long and getattr(cfg, "on_long_prompt", "truncate") == "fail":
        raise PromptTooLongError(
            f"{len(too_long)} prompt(s) exceed generation.max_prompt_tokens={cfg.max_prompt_tokens} (rows "
            f"{too_long[:5]}); raise the limit or set generation.on_long_prompt=truncate")
    encoded = [ids[-cfg.max_prompt_tokens :] for ids in encoded]
    eos = _eos_ids(model, tokenizer)
    if not eos:
        raise ValueError("the model has no EOS token: set generation_config.eos_token_id")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)

    start = time.perf_counter()
    continuations = decode_batches(
        model, encoded, max_new_tokens=cfg.max_new_tokens, sampling=sampling_of(cfg), eos=sorted(eos),
        pad_id=pad_id, batch_size=cfg.batch_size, seed=cfg.seed, engine=cfg.engine, progress=progress,
    )
    seconds = time.perf_counter() - start
    token_ids, texts, new_tokens, finished = [], [], [], []
    for tokens in continuations:
        ended = bool(tokens) and tokens[-1] in eos
        kept = tokens[:-1] if ended else tokens
        token_ids.append(kept)
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
        new_tokens.append(len(kept))
        finished.append(ended)
    return GenerationOutput(
        texts=texts,
        token_ids=token_ids,
        prompt_tokens=[len(ids) for ids in encoded],
        new_tokens=new_tokens,
        finished=finished,
        truncated=truncated,
        seconds=seconds,
    )
