"""The distillation recipe: pick the method's training data, evaluate, train, evaluate again.

Example::

    run = distil(teacher, student, responses, scrg_table, cfg.distill, cfg.generation, "ckpt/", on_log=print)
    run.metrics["rougeL_after"], run.samples.head()

Training data per method:
- mgsr: the SCRG-revised sequences (stage scrg_correct), with phrase-span pairs for the span loss;
- seqkd and the token-level divergences (kd_fkl, kd_rkl, jsd, skew_fkl, skew_rkl): teacher responses;
- sft: the dataset's references (the teacher's response where a prompt has none; counted);
- gkd: teacher responses, of which a `gkd_on_policy` share of micro-batches is replaced by fresh
  student samples at training time (seeded by the micro-batch index, so resumes replay them).
Evaluation: greedy generations on the test split, ROUGE-L against the dataset reference where there is
one and the teacher's response otherwise, for the teacher, the student before and after training.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from components.distill.data import (
    BuildReport,
    DistillDataError,
    Example,
    build_examples,
    collate,
    response_ids,
    tokenize_prompts,
)
from components.distill.evaluate import rouge_l
from components.distill.objective import Objective, student_loss_fn
from components.distill.scrg import sample_responses
from components.distill.spans import PhraseChunker
from components.training.trainer import Trainer, TrainResult, label_tokens
from components.generation import format_prompts, generate
from semflow.config import DistillConfig, GenerationConfig, ScrgConfig


@dataclass
class DistillRun:
    train: TrainResult
    samples: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)
    report: BuildReport = field(default_factory=BuildReport)
    chunker: str = "none"
    objective: Objective | None = None


def _present(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _fp32_master(model) -> None:
    """Train in fp32 master weights: a bf16/fp16 teacher gives a half-precision pruned student, and
    AdamW on half-precision weights loses small updates; CUDA steps still run under bf16 autocast."""
    if next(model.parameters()).dtype != torch.float32:
        model.float()


def training_data(method: str, responses: pd.DataFrame, scrg: pd.DataFrame | None, tokenizer,
                  generation: GenerationConfig, cfg: DistillConfig) -> tuple[list[list[int]], list[list[int]], int, int]:
    """(prompt ids, response ids, prompts truncated, references replaced by teacher responses)."""
    if method == "mgsr":
        if scrg is None:
            raise DistillDataError("method mgsr needs the scrg_correct stage's output")
        table = scrg[scrg["split"] == "train"]
        if table.empty:
            raise DistillDataError("the training split is empty: SCRG produced no train rows")
        return [list(x) for x in table["prompt_ids"]], [list(x) for x in table["revised_ids"]], 0, 0
    table = responses[responses["split"] == "train"]
    if table.empty:
        raise DistillDataError("the training split is empty: no 'train' rows in the teacher's responses")
    rendered = format_prompts(tokenizer, table["instruction"].tolist(), table["input"].tolist(),
                              generation.system_prompt)
    prompts, truncated = tokenize_prompts(tokenizer, rendered, generation.max_prompt_tokens, generation.on_long_prompt,
                                          ids=table["id"].tolist())
    texts, finished, replaced = table["response"].tolist(), table["finished"].tolist(), 0
    if method == "sft":
        has_ref = [_present(r) for r in table["reference"]]
        replaced = len(has_ref) - sum(has_ref)
        texts = [r if ok else t for r, t, ok in zip(table["reference"], texts, has_ref, strict=True)]
        finished = [True if ok else f for f, ok in zip(finished, has_ref, strict=True)]
    return prompts, response_ids(tokenizer, texts, finished), truncated, replaced


def greedy_outputs(model, tokenizer, table: pd.DataFrame, cfg: DistillConfig, generation: GenerationConfig) -> list[str]:
    rendered = format_prompts(tokenizer, table["instruction"].tolist(), table["input"].tolist(), generation.system_prompt)
    eval_cfg = GenerationConfig(max_new_tokens=cfg.eval_max_new_tokens, do_sample=False, batch_size=cfg.eval_batch_size,
                                max_prompt_tokens=generation.max_prompt_tokens, system_prompt=generation.system_prompt)
    return generate(model, tokenizer, rendered, eval_cfg, progress=False).texts


def heal_student(teacher, student, responses: pd.DataFrame, generation: GenerationConfig, warmup,
                 ckpt_dir: str | Path, eval_cfg: DistillConfig,
                 on_log: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True) -> DistillRun:
    """SFT warm-up of a freshly initialised student on the teacher's responses (SeqKD), the
    "SFT-initialised student" every KD recipe of the MGSR/DistiLLM/MiniLLM line starts from. A student
    pruned to half its teacher's layers writes noise until healed, and SCRG revises the student's own
    samples, so distillation starts here. Reports ROUGE-L on the test split before and after."""
    cfg = eval_cfg.model_copy(update={"method": "seqkd", "train": warmup})
    tok = teacher.tokenizer
    prompts, seqs, truncated, _ = training_data("seqkd", responses, None, tok, generation, cfg)
    examples, report = build_examples(tok, prompts, seqs, cfg, None)
    report.prompts_truncated = truncated
    test = responses[responses["split"] == "test"].reset_index(drop=True)
    references = [r if _present(r) else t for r, t in zip(test["reference"], test["response"], strict=True)]
    before = greedy_outputs(student.model, tok, test, cfg, generation) if len(test) else []
    objective = Objective(cfg)
    _fp32_master(student.model)
    trainer = Trainer(student.model, student_loss_fn(student.model, None, objective, cfg.chunk_size), examples,
                      lambda ex: collate(ex, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id),
                      warmup, ckpt_dir, on_log=on_log, progress=progress, loss_weight=label_tokens)
    result = trainer.train()
    after = greedy_outputs(student.model, tok, test, cfg, generation) if len(test) else []
    samples = test[["id", "instruction"]].assign(
        reference=references, student_initial=before, student_healed=after,
        rougeL_initial=rouge_l(before, references), rougeL_healed=rouge_l(after, references),
    )
    mean = lambda col: float(samples[col].mean()) if len(samples) else float("nan")  # noqa: E731
    last = result.history[-1] if result.history else {}
    metrics = {
        "rougeL_initial": mean("rougeL_initial"), "rougeL_healed": mean("rougeL_healed"),
        "train_examples": float(len(examples)), "train_steps": float(result.steps),
        "resumed_from_step": float(result.resumed_from), "train_seconds": result.seconds,
        "final_loss": float(last.get("loss", float("nan"))), "prompts_truncated": float(truncated),
        "responses_cut": float(report.responses_cut),
    }
    return DistillRun(train=result, samples=samples, metrics=metrics, report=report)


def distil(teacher, student, responses: pd.DataFrame, scrg: pd.DataFrame | None, cfg: DistillConfig,
           generation: GenerationConfig, ckpt_dir: str | Path,
           on_log: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True,
           before: list[str] | None = None) -> DistillRun:
    """`before`: the starting student's greedy test generations when already computed (init_student's
    eval, same prompts and settings); they are generated here otherwise."""
    tok = teacher.tokenizer
    chunker = PhraseChunker(cfg.spans) if cfg.method == "mgsr" and cfg.w_span > 0 else None
    prompts, seqs, truncated, replaced = training_data(cfg.method, responses, scrg, tok, generation, cfg)
    examples, report = build_examples(tok, prompts, seqs, cfg, chunker)
    report.prompts_truncated = truncated

    val = responses[responses["split"] == "val"]
    val_examples: list[Example] = []
    if not val.empty:
        v_prompts, v_seqs, _, _ = training_data("seqkd", val.assign(split="train"), None, tok, generation, cfg)
        val_examples, _ = build_examples(tok, v_prompts, v_seqs, cfg, None)

    test = responses[responses["split"] == "test"].reset_index(drop=True)
    references = [r if _present(r) else t for r, t in zip(test["reference"], test["response"], strict=True)]
    if before is None or len(before) != len(test):
        before = greedy_outputs(student.model, tok, test, cfg, generation) if len(test) else []

    objective = Objective(cfg).to(student.model.device)
    _fp32_master(student.model)
    batch_hook = _gkd_hook(student.model, tok, cfg) if cfg.method == "gkd" else None
    trainer = Trainer(
        student.model, student_loss_fn(student.model, teacher.model, objective, cfg.chunk_size), examples,
        lambda ex: collate(ex, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id),
        cfg.train, ckpt_dir, val_examples=val_examples, extra_modules={"objective": objective},
        param_groups=[{"params": list(objective.parameters()), "lr": cfg.band_lr}],
        on_log=on_log, batch_hook=batch_hook, progress=progress, loss_weight=label_tokens,
    )
    result = trainer.train()

    after = greedy_outputs(student.model, tok, test, cfg, generation) if len(test) else []
    # The teacher's greedy answers to the test prompts already exist when stage 2 generated them with
    # the same settings (greedy, same length): greedy decoding is batch-invariant, so reuse them.
    if not generation.do_sample and generation.max_new_tokens == cfg.eval_max_new_tokens and "test" in generation.splits:
        teacher_out = test["response"].fillna("").tolist()
    else:
        teacher_out = greedy_outputs(teacher.model, tok, test, cfg, generation) if len(test) else []
    samples = test[["id", "instruction"]].assign(
        reference=references, teacher=teacher_out, student_before=before, student_after=after,
        rougeL_teacher=rouge_l(teacher_out, references), rougeL_before=rouge_l(before, references),
        rougeL_after=rouge_l(after, references),
    )
    mean = lambda col: float(samples[col].mean()) if len(samples) else float("nan")  # noqa: E731
    pairs = sum(sum(e.pairs) for e in examples)
    tokens = sum(len(e.response) for e in examples)
    last = result.history[-1] if result.history else {}
    metrics = {
        "rougeL_teacher": mean("rougeL_teacher"),
        "rougeL_before": mean("rougeL_before"),
        "rougeL_after": mean("rougeL_after"),
        "test_prompts": float(len(test)),
        "train_examples": float(len(examples)),
        "train_response_tokens": float(tokens),
        "span_pair_share": pairs / max(tokens, 1),
        "train_steps": float(result.steps),
        "resumed_from_step": float(result.resumed_from),
        "train_seconds": result.seconds,
        "train_tokens_per_second": result.tokens / max(result.seconds, 1e-9),
        "final_loss": float(last.get("loss", float("nan"))),
        "prompts_truncated": float(report.prompts_truncated),
        "responses_cut": float(report.responses_cut),
        "references_replaced_by_teacher": float(replaced),
    }
    if "val_loss" in last:
        metrics["final_val_loss"] = float(last["val_loss"])
    return DistillRun(train=result, samples=samples, metrics=metrics, report=report,
                      chunker=chunker.kind if chunker else "none", objective=objective)


def _gkd_hook(model, tokenizer, cfg: DistillConfig) -> Callable[[list[Example], int], list[Example]]:
    """GKD's on-policy share: with probability gkd_on_policy a micro-batch's responses are resampled
    from the current student (seeded by the micro-batch index, so a resumed run samples the same)."""
    sampling = ScrgConfig(max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.train.batch_size)

    def hook(examples: list[Example], micro_index: int) -> list[Example]:
        if random.Random(cfg.train.seed * 7919 + micro_index).random() >= cfg.gkd_on_policy:
            return examples
        was_training = model.training
        model.eval()
        fresh = sample_responses(model, tokenizer, [e.prompt for e in examples], sampling,
                                 seed=cfg.train.seed + micro_index)
        model.train(was_training)
        room = [cfg.max_seq_tokens - len(e.prompt) for e in examples]
        return [Example(e.prompt, ids[:r], [False] * len(ids[:r])) for e, ids, r in zip(examples, fresh, room, strict=True)]

    return hook
