"""The distillation recipe: pick the method's training data, train, evaluate before and after.

Example::

    run = distil(teacher, student, responses, scrg_table, cfg.distill, cfg.generation, cfg.scrg, "ckpt/",
                 on_log=print)
    run.metrics["rougeL_after"], run.metrics["rougeL_gain_ci_low"], run.samples.head()

Training sequences per method (`training_data`):
- mgsr: by `scrg_schedule`: offline and mixed train on the SCRG table of the scrg_correct stage, online and
  none on the teacher's responses; online and mixed replace `online_share` of every micro-batch by fresh
  SCRG-revised student samples during training (components.distill.online); phrase-span pairs for the span loss;
- seqkd and the token-level divergences (kd_fkl, kd_rkl, jsd, skew_fkl, skew_rkl): teacher responses;
- sft: the dataset's references (the teacher's response where a prompt has none; counted);
- gkd: teacher responses, of which a `gkd_on_policy` share of micro-batches is replaced by fresh
  student samples at training time (seeded by the micro-batch index, so resumes replay them).
SFT targets (`distill.sft_target`, see components.distill.data): a sequence the student sampled is never
one; the teacher's response or the reference for its prompt is, through a separate SFT-only pass.
Evaluation: greedy generations on the test split, ROUGE-L against the dataset reference where there is
one and the teacher's response otherwise, for the teacher and the student before and after training; a
paired bootstrap 95 % CI of after - before over test prompts (``rougeL_gain``) and of teacher - before
(``rougeL_headroom``: what a student that wrote its teacher's answers would show); repetition share and
distinct-2 of each.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
from components.distill.evaluate import degeneration, paired_bootstrap, rouge_l
from components.distill.objective import Objective, student_loss_fn
from components.distill.online import scrg_hook
from components.distill.scrg import sample_responses
from components.distill.spans import PhraseChunker
from components.generation import format_prompts, generate
from components.training.trainer import Trainer, TrainResult, label_tokens
from semflow.config import DistillConfig, GenerationConfig, ScrgConfig


@dataclass
class DistillRun:
    train: TrainResult
    samples: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)
    report: BuildReport = field(default_factory=BuildReport)
    chunker: str = "none"
    objective: Objective | None = None

    def save(self, student, out: str | Path) -> None:
        """`out`/student/ (weights + tokenizer), f_sub.safetensors (MGSR's band predictor), history.parquet
        (one row per logged step) and eval.parquet (the test answers and their scores)."""
        from safetensors.torch import save_model

        from components.data import write_dataset

        out = Path(out)
        student.model.save_pretrained(out / "student")
        student.tokenizer.save_pretrained(out / "student")
        if self.objective is not None and self.objective.band is not None:
            save_model(self.objective, str(out / "f_sub.safetensors"))
        write_dataset(pd.DataFrame(self.train.history), out / "history.parquet")
        write_dataset(self.samples, out / "eval.parquet")


@dataclass
class TrainingData:
    prompts: list[list[int]]
    sequences: list[list[int]]  # what the KD terms train on
    supervised: list[bool]  # the sequence is itself a supervision target
    targets: list[list[int] | None]  # the SFT target of the other rows (None: no SFT term)
    prompts_truncated: int = 0
    references_replaced: int = 0  # prompts without a reference, whose teacher response stood in


def _present(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _fp32_master(model) -> None:
    """Train in fp32 master weights: a bf16/fp16 teacher gives a half-precision pruned student, and
    AdamW on half-precision weights loses small updates; CUDA steps still run under bf16 autocast."""
    if next(model.parameters()).dtype != torch.float32:
        model.float()


def _targets(table: pd.DataFrame, tokenizer, kind: str) -> tuple[list[list[int]], int]:
    """Per row of `table` (columns response, finished, reference): the ids of its teacher response
    (kind teacher) or of its reference, the teacher's response where it has none (kind reference)."""
    texts, finished, replaced = table["response"].tolist(), table["finished"].tolist(), 0
    if kind == "reference":
        has_ref = [_present(r) for r in table["reference"]]
        replaced = len(has_ref) - sum(has_ref)
        texts = [r if ok else t for r, t, ok in zip(table["reference"], texts, has_ref, strict=True)]
        finished = [True if ok else f for f, ok in zip(finished, has_ref, strict=True)]
    return response_ids(tokenizer, texts, finished), replaced


def training_data(method: str, responses: pd.DataFrame, scrg: pd.DataFrame | None, tokenizer,
                  generation: GenerationConfig, cfg: DistillConfig) -> TrainingData:
    """The training rows of `method` (see the module docstring) with their SFT targets."""
    table = responses[responses["split"] == "train"].reset_index(drop=True)
    if table.empty:
        raise DistillDataError("the training split is empty: no 'train' rows in the teacher's responses")
    rendered = format_prompts(tokenizer, table["instruction"].tolist(), table["input"].tolist(),
                              generation.system_prompt)
    prompts, truncated = tokenize_prompts(tokenizer, rendered, generation.max_prompt_tokens, generation.on_long_prompt,
                                          ids=table["id"].tolist())
    teacher_ids, _ = _targets(table, tokenizer, "teacher")
    if method in ("sft", "seqkd"):  # the sequence is the target
        seqs, replaced = _targets(table, tokenizer, "reference" if method == "sft" else "teacher")
        return TrainingData(prompts, seqs, [True] * len(seqs), [None] * len(seqs), truncated, replaced)

    supervised, seqs = [True] * len(table), teacher_ids
    if method == "mgsr" and cfg.scrg_schedule in ("offline", "mixed"):
        if scrg is None:
            raise DistillDataError(f"mgsr with scrg_schedule {cfg.scrg_schedule} needs the scrg_correct stage's output")
        rows = scrg[scrg["split"] == "train"].set_index("id")
        if rows.empty:
            raise DistillDataError("the training split is empty: SCRG produced no train rows")
        rows = rows.loc[table["id"]]  # the responses' order; SCRG covered every train prompt
        prompts = [list(x) for x in rows["prompt_ids"]]
        seqs = [list(x) for x in rows["revised_ids"]]
        # a teacher row is supervision only while SCRG left it as it was (correct_off_policy revises it)
        supervised = [src == "teacher" and not corrected for src, corrected in zip(rows["source"], rows["corrected"],
                                                                                    strict=True)]
        truncated = 0  # counted by scrg_correct
    replaced = 0
    if cfg.sft_target in ("teacher", "reference"):
        wanted, replaced = _targets(table, tokenizer, cfg.sft_target)
        # a row whose sequence already is its target needs no second pass
        targets = [None if sup and list(s) == list(w) else w for s, w, sup in zip(seqs, wanted, supervised, strict=True)]
        supervised = [t is None for t in targets]
    elif cfg.sft_target == "supervised_rows":
        targets = [None] * len(seqs)
    else:  # none
        supervised, targets = [False] * len(seqs), [None] * len(seqs)
    return TrainingData(prompts, seqs, supervised, targets, truncated, replaced)


def greedy_outputs(model, tokenizer, table: pd.DataFrame, cfg: DistillConfig, generation: GenerationConfig) -> list[str]:
    rendered = format_prompts(tokenizer, table["instruction"].tolist(), table["input"].tolist(), generation.system_prompt)
    eval_cfg = GenerationConfig(max_new_tokens=cfg.eval_max_new_tokens, do_sample=False, batch_size=cfg.eval_batch_size,
                                max_prompt_tokens=generation.max_prompt_tokens, system_prompt=generation.system_prompt)
    return generate(model, tokenizer, rendered, eval_cfg, progress=False).texts


def scored_test_split(responses: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The test split and the reference each test prompt is scored against (the teacher's response
    where the dataset has none)."""
    test = responses[responses["split"] == "test"].reset_index(drop=True)
    return test, [r if _present(r) else t for r, t in zip(test["reference"], test["response"], strict=True)]


def compare_outputs(outputs: dict[str, list[str]], references: list[str], cfg: DistillConfig,
                    pairs: dict[str, tuple[str, str]] | None = None) -> tuple[dict[str, list[float]], dict[str, float]]:
    """ROUGE-L per prompt of each named set of outputs, and metrics: rougeL_<name> (mean),
    repetition_share_<name>, distinct2_<name>, and for each ``key: (a, b)`` in `pairs` the mean of a - b
    (``key``) with its paired bootstrap CI (``key_ci_low``, ``key_ci_high``)."""
    scores = {name: rouge_l(texts, references) for name, texts in outputs.items()}
    metrics: dict[str, float] = {}
    for name, texts in outputs.items():
        metrics[f"rougeL_{name}"] = float(sum(scores[name]) / len(scores[name])) if scores[name] else float("nan")
        d = degeneration(texts)
        metrics[f"repetition_share_{name}"] = d["repetition_share"]
        metrics[f"distinct2_{name}"] = d["distinct_2"]
    for key, (a, b) in (pairs or {}).items():
        ci = paired_bootstrap(scores[a], scores[b], cfg.bootstrap_samples, seed=cfg.train.seed)
        metrics.update({key: ci.mean, f"{key}_ci_low": ci.low, f"{key}_ci_high": ci.high})
    return scores, metrics


def heal_student(teacher, student, responses: pd.DataFrame, generation: GenerationConfig, warmup,
                 ckpt_dir: str | Path, eval_cfg: DistillConfig,
                 on_log: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True,
                 eval_initial: bool = True, target: Literal["teacher", "reference"] = "teacher",
                 loss: Literal["sft", "kd"] = "sft") -> DistillRun:
    """Warm-up of a freshly initialised student, the "SFT-initialised student" every KD recipe of the
    MGSR/DistiLLM/MiniLLM line starts from. A student pruned from its teacher writes noise until healed,
    and SCRG revises the student's own samples, so distillation starts here. Reports ROUGE-L on the test
    split after (and, with `eval_initial`, before).

    `loss` sft: cross-entropy on the teacher's responses (`target` teacher: SeqKD) or on the dataset
    references (`target` reference: SFT on ground truth, as MiniLLM and DistiLLM initialise their students).
    `loss` kd: forward KL to the teacher's token distributions along the teacher's responses (word-level
    KD, Kim & Rush 2016, "Sequence-Level Knowledge Distillation", Section 3.1), how Minitron heals a pruned
    model by logit distillation (Muralidharan et al. 2024, arXiv 2407.14679; Sreenivas et al. 2024, arXiv
    2408.11796): every position teaches the whole distribution, not one token. With `target` reference a
    cross-entropy term on the references (weight 1) is added. On the default data, with its 30 steps, kd
    healed worse than sft (bench/results/distill.md section 1e)."""
    if loss == "kd":
        cfg = eval_cfg.model_copy(update={"method": "kd_fkl", "train": warmup, "sft_target": target,
                                          "kd_sft_weight": 1.0 if target == "reference" else 0.0})
    else:
        cfg = eval_cfg.model_copy(update={"method": {"teacher": "seqkd", "reference": "sft"}[target], "train": warmup})
    tok = teacher.tokenizer
    data = training_data(cfg.method, responses, None, tok, generation, cfg)
    examples, report = build_examples(tok, data.prompts, data.sequences, cfg, None, data.supervised, data.targets)
    report.prompts_truncated = data.prompts_truncated
    test, references = scored_test_split(responses)
    outputs = {}
    if eval_initial and len(test):
        outputs["initial"] = greedy_outputs(student.model, tok, test, cfg, generation)
    objective = Objective(cfg)
    _fp32_master(student.model)
    guide = teacher.model.eval() if objective.needs_teacher else None
    trainer = Trainer(student.model, student_loss_fn(student.model, guide, objective, cfg.chunk_size), examples,
                      lambda ex: collate(ex, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id),
                      warmup, ckpt_dir, on_log=on_log, progress=progress, loss_weight=label_tokens)
    result = trainer.train()
    outputs["healed"] = greedy_outputs(student.model, tok, test, cfg, generation) if len(test) else []
    scores, metrics = compare_outputs(outputs, references, cfg)
    samples = test[["id", "instruction"]].assign(reference=references)
    for name, texts in outputs.items():
        samples[f"student_{name}"] = texts
        samples[f"rougeL_{name}"] = scores[name]
    last = result.history[-1] if result.history else {}
    metrics.update({
        "train_examples": float(len(examples)), "train_steps": float(result.steps),
        "resumed_from_step": float(result.resumed_from), "train_seconds": result.seconds,
        "final_loss": float(last.get("loss", float("nan"))), "prompts_truncated": float(data.prompts_truncated),
        "responses_cut": float(report.responses_cut), "references_replaced_by_teacher": float(data.references_replaced),
    })
    return DistillRun(train=result, samples=samples, metrics=metrics, report=report)


def distil(teacher, student, responses: pd.DataFrame, scrg: pd.DataFrame | None, cfg: DistillConfig,
           generation: GenerationConfig, scrg_cfg: ScrgConfig, ckpt_dir: str | Path,
           on_log: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True,
           before: list[str] | None = None) -> DistillRun:
    """`before`: the starting student's greedy test generations when already computed (init_student's
    eval, same prompts and settings); they are generated here otherwise. `scrg_cfg`: the sampling and
    correction settings of online SCRG (scrg_schedule online/mixed)."""
    tok = teacher.tokenizer
    chunker = PhraseChunker(cfg.spans) if cfg.method == "mgsr" and cfg.w_span > 0 else None
    data = training_data(cfg.method, responses, scrg, tok, generation, cfg)
    examples, report = build_examples(tok, data.prompts, data.sequences, cfg, chunker, data.supervised, data.targets)
    report.prompts_truncated = data.prompts_truncated

    val = responses[responses["split"] == "val"]
    val_examples: list[Example] = []
    if not val.empty:
        v = training_data("seqkd", val.assign(split="train"), None, tok, generation, cfg)
        val_examples, _ = build_examples(tok, v.prompts, v.sequences, cfg, None)

    test, references = scored_test_split(responses)
    if before is None or len(before) != len(test):
        before = greedy_outputs(student.model, tok, test, cfg, generation) if len(test) else []

    objective = Objective(cfg).to(student.model.device)
    _fp32_master(student.model)
    online: dict[str, float] = {}
    batch_hook = None
    if cfg.method == "gkd":
        batch_hook = _gkd_hook(student.model, tok, cfg)
    elif cfg.method == "mgsr" and cfg.scrg_schedule in ("online", "mixed"):
        batch_hook = scrg_hook(teacher.model, student.model, tok, scrg_cfg, cfg.online_share, cfg.train.seed, chunker,
                               cfg.max_seq_tokens, sft_targets=cfg.sft_target in ("teacher", "reference"),
                               stats=online)
    trainer = Trainer(
        student.model, student_loss_fn(student.model, teacher.model, objective, cfg.chunk_size), examples,
        lambda ex: collate(ex, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id),
        cfg.train, ckpt_dir, val_examples=val_examples, extra_modules={"objective": objective},
        param_groups=[{"params": list(objective.parameters()), "lr": cfg.band_lr}],
        on_log=on_log, batch_hook=batch_hook, progress=progress, loss_weight=label_tokens,
    )
    result = trainer.train()

    after = greedy_outputs(student.model, tok, test, cfg, generation) if len(test) else []
    # The teacher's greedy answers to the test prompts already exist when generate_teacher wrote them
    # with the same settings (greedy, same length): greedy decoding is batch-invariant, so reuse them.
    if not generation.do_sample and generation.max_new_tokens == cfg.eval_max_new_tokens and "test" in generation.splits:
        teacher_out = test["response"].fillna("").tolist()
    else:
        teacher_out = greedy_outputs(teacher.model, tok, test, cfg, generation) if len(test) else []
    outputs = {"teacher": teacher_out, "before": before, "after": after}
    # rougeL_headroom: teacher - before, the gain a student that wrote its teacher's answers would show
    # on this test split (about the most a student distilled from that teacher can be expected to gain);
    # beside rougeL_gain it says whether the test split can resolve a gain at all
    scores, metrics = compare_outputs(outputs, references, cfg, pairs={"rougeL_gain": ("after", "before"),
                                                                        "rougeL_headroom": ("teacher", "before")})
    samples = test[["id", "instruction"]].assign(
        reference=references, teacher=teacher_out, student_before=before, student_after=after,
        rougeL_teacher=scores["teacher"], rougeL_before=scores["before"], rougeL_after=scores["after"],
    )
    pairs = sum(sum(e.pairs) for e in examples)
    tokens = sum(len(e.response) for e in examples)
    last = result.history[-1] if result.history else {}
    metrics.update({
        "test_prompts": float(len(test)),
        "train_examples": float(len(examples)),
        "train_supervised_share": sum(e.supervised for e in examples) / max(len(examples), 1),
        "train_response_tokens": float(tokens),
        "span_pair_share": pairs / max(tokens, 1),
        "train_steps": float(result.steps),
        "resumed_from_step": float(result.resumed_from),
        "train_seconds": result.seconds,
        "train_tokens_per_second": result.tokens / max(result.seconds, 1e-9),
        "final_loss": float(last.get("loss", float("nan"))),
        "prompts_truncated": float(report.prompts_truncated),
        "responses_cut": float(report.responses_cut),
        "references_replaced_by_teacher": float(data.references_replaced),
        **{k: float(v) for k, v in online.items()},
    })
    if "val_loss" in last:
        metrics["final_val_loss"] = float(last["val_loss"])
    return DistillRun(train=result, samples=samples, metrics=metrics, report=report,
                      chunker=chunker.kind if chunker else "none", objective=objective)


def _gkd_hook(model, tokenizer, cfg: DistillConfig) -> Callable[[list[Example], int], list[Example]]:
    """GKD's on-policy share (Agarwal et al. 2024, Algorithm 1's student-data fraction): with probability
    gkd_on_policy a micro-batch's responses are resampled from the current student (seeded by the
    micro-batch index, so a resumed run samples the same). A sample keeps its row's SFT target, never
    becomes one."""
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
        return [Example(e.prompt, ids[:r], [False] * len(ids[:r]), supervised=False,
                        target=e.response if e.supervised else e.target)
                for e, ids, r in zip(examples, fresh, room, strict=True)]

    return hook
