"""`generation` and the sampling settings every generating stage shares (teacher answers, SCRG)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from semflow.config.base import Section


class SamplingConfig(Section):
    """How a stage decodes: the settings teacher generation and SCRG share (defined once here)."""

    max_new_tokens: int = Field(64, gt=0, description="response budget in tokens")
    do_sample: bool = Field(False, description="sample (true) or greedy (false)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (1: off)")
    top_k: int = Field(0, ge=0, description="0 disables top-k")
    seed: int = Field(0, description="sampling seed (each batch draws from seed + its index)")
    batch_size: int = Field(8, gt=0, description="prompts decoded together")
    engine: Literal["auto", "plain", "static", "fused"] = Field(
        "auto", description="decoding path: plain model.generate; static: a static KV cache with CUDA graphs; "
        "fused: the static path with our own fused Llama step (components.generation.fused; Inductor-compiled on "
        "CUDA; SCRG builds one decoder per batch, so each new batch shape compiles again); auto: static on CUDA when the "
        "model supports it, plain on CPU. Measured: bench/results/gpu_decode.md",
    )


class GenerationConfig(SamplingConfig):
    """Teacher generation, and the prompt rendering every stage shares."""

    max_prompt_tokens: int = Field(512, gt=0, description="prompt budget in tokens (see on_long_prompt)")
    on_long_prompt: Literal["truncate", "fail"] = Field(
        "truncate", description="a prompt over max_prompt_tokens keeps its last tokens and is counted (truncate), "
        "or the stage fails naming it (fail); teacher generation, SCRG and distillation all follow it",
    )
    system_prompt: str | None = Field(None, description="system message of the chat template (None: the model's)")
    splits: list[Literal["train", "val", "test"]] = Field(
        ["train", "val", "test"], description="prompt splits the teacher answers"
    )
