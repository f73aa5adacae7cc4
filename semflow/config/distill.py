"""`scrg`, `distill`: sequence-level correction and the distillation objective (components/distill)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from semflow.config.base import Section
from semflow.config.generation import SamplingConfig
from semflow.config.training import TrainerConfig

METHODS = ("mgsr", "sft", "seqkd", "kd_fkl", "kd_rkl", "jsd", "skew_fkl", "skew_rkl", "gkd")


class ScrgConfig(SamplingConfig):
    """SCRG: the student samples, the most divergent disagreeing token is replaced by the teacher's,
    the student regenerates the rest (MGSR sequence level). Sampling fields as `generation`, but the
    student samples by default."""

    do_sample: bool = Field(True, description="student sampling and regeneration; false: greedy")
    on_policy: float = Field(
        1.0, ge=0, le=1,
        description="share of prompts whose sequence is a student sample; the rest start from the "
        "teacher's response (1: on-policy, 0: off-policy, as DistiLLM/GKD mixes)",
    )
    correct_off_policy: bool = Field(
        False, description="also run SCRG on the teacher-response rows (default: they pass through as they are)"
    )
    rounds: int = Field(1, ge=0, le=16, description="corrections per sequence (the paper tried 1, 3, 5)")
    teacher_token: Literal["sample", "argmax"] = Field(
        "sample", description="the replacement token: sampled from the teacher's distribution, or its argmax"
    )
    direction: Literal["forward", "reverse"] = Field(
        "forward", description="d_i = KL(P_i || Q_i) (forward) or KL(Q_i || P_i)"
    )


SCHEDULES = ("offline", "online", "mixed", "none")


class DistillConfig(Section):
    """Student distillation: MGSR or a baseline, selected by `method` (docs/distillation.md)."""

    method: Literal[METHODS] = Field(  # type: ignore[valid-type]
        "mgsr", description="mgsr, or a baseline: sft (references), seqkd (teacher responses), kd_fkl, kd_rkl, jsd, "
        "skew_fkl, skew_rkl, gkd",
    )
    scrg_schedule: Literal[SCHEDULES] = Field(  # type: ignore[valid-type]
        "offline", description="mgsr: where SCRG sequences come from. offline: the scrg_correct stage's table (SCRG "
        "once, with the initial student); online: teacher responses, of which `online_share` of every micro-batch is "
        "sampled by the current student and revised by SCRG during training; mixed: the offline table plus the same "
        "online share; none: teacher responses only (the no-SCRG ablation)",
    )
    online_share: float = Field(
        0.5, ge=0, le=1, description="online/mixed: share of each micro-batch's rows resampled by the current student "
        "and corrected by SCRG (scrg section's sampling settings), seeded by the micro-batch index",
    )
    token_loss: Literal["dac_kl", "forward_kl"] = Field(
        "dac_kl", description="mgsr: the token-level term: DAC-KL (paper), or plain forward KL (the ablation)"
    )
    sft_target: Literal["teacher", "reference", "supervised_rows", "none"] = Field(
        "teacher", description="what the SFT term of mgsr (and kd_sft_weight of the divergence baselines) trains on: "
        "teacher: the teacher's response to the row's prompt; reference: the dataset reference (the teacher's response "
        "where none); supervised_rows: only rows whose training sequence is itself the teacher's response; none: no "
        "SFT term. A student-sampled (SCRG, online, GKD) sequence is never an SFT target: rows carrying one get an extra "
        "student pass over their target",
    )
    w_sft: float = Field(1.0, ge=0, description="MGSR: weight of the SFT term")
    w_dac: float = Field(1.0, ge=0, description="MGSR: weight of the DAC-KL term")
    w_span: float = Field(1.0, ge=0, description="MGSR: weight of the span-correlation term")
    kd_sft_weight: float = Field(0.0, ge=0, description="SFT term added to the divergence baselines")
    tau: float = Field(1.0, gt=0, description="temperature of both distributions in every KD loss")
    top_k: int = Field(256, gt=1, description="DAC-KL: sorted teacher entries f_sub sees")
    band_hidden: int = Field(64, gt=0, description="DAC-KL: width of f_sub's hidden layer")
    kappa: float = Field(50.0, gt=0, description="DAC-KL: sharpness of the soft band edges")
    dac_target: Literal["label", "teacher_argmax"] = Field(
        "teacher_argmax", description="DAC-KL: the target class kept beside the band: the teacher's argmax, or the "
        "sequence's own token (label; on a student-sampled row that is the student's choice)",
    )
    band_vectors: Literal["normalised", "unnormalised"] = Field(
        "normalised", description="DAC-KL: renormalise the clipped teacher and student vectors to distributions "
        "(paper), or compare them as they are with the generalised KL sum t log(t/s) - t + s",
    )
    band_objective: Literal["coverage", "joint", "frozen"] = Field(
        "coverage", description="how f_sub learns: joint: only through L_DAC, as the paper (its minimum is an empty "
        "band); coverage: L_DAC plus band_coverage_weight * relu(band_coverage - c)^2 with c the share of the "
        "non-target teacher mass inside the band; frozen: f_sub stays at its init (the fixed-band ablation)",
    )
    band_coverage: float = Field(
        0.8, gt=0, lt=1, description="coverage: least share of the non-target teacher mass the band must keep"
    )
    band_coverage_weight: float = Field(100.0, ge=0, description="coverage: weight of the coverage penalty")
    band_lr: float = Field(1e-2, gt=0, description="learning rate of f_sub")
    jsd_beta: float = Field(0.5, gt=0, lt=1, description="jsd/gkd: mixture weight of the generalised JSD")
    skew_alpha: float = Field(0.1, ge=0, lt=1, description="skew_fkl/skew_rkl: skew of the mixture (DistiLLM)")
    gkd_on_policy: float = Field(
        0.5, ge=0, le=1, description="gkd: share of steps whose responses the student samples anew"
    )
    spans: Literal["auto", "spacy", "rules"] = Field(
        "auto", description="phrase chunker: spaCy when en_core_web_sm is installed (auto), else rules"
    )
    chunk_size: int | None = Field(
        512, gt=0, description="response tokens per logits chunk; None computes full logits"
    )
    max_seq_tokens: int = Field(768, gt=0, description="prompt + response; longer responses are cut")
    train: TrainerConfig = Field(TrainerConfig(), description="the training loop")
    eval_max_new_tokens: int = Field(64, gt=0, description="greedy tokens per test prompt for ROUGE-L")
    eval_batch_size: int = Field(8, gt=0, description="test prompts decoded together")
    @property
    def reads_scrg_table(self) -> bool:
        """MGSR trains on the scrg_correct stage's table (offline and mixed schedules)."""
        return self.method == "mgsr" and self.scrg_schedule in ("offline", "mixed")

    @property
    def samples_online(self) -> bool:
        """MGSR runs SCRG on fresh student samples during training (online and mixed schedules)."""
        return self.method == "mgsr" and self.scrg_schedule in ("online", "mixed")

    bootstrap_samples: int = Field(
        10000, gt=0, description="paired bootstrap resamples of the after-minus-before ROUGE-L CI (95 %)"
    )
