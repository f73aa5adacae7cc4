"""Stage init_student: the student that SCRG and distillation start from: pruned from the teacher (the
layers `student.keep_layers` names, or `student.layers` of them chosen by `student.select` from the
teacher's hidden states on its own training answers), or loaded from its own spec (the vocabularies
must match); then healed by a short warm-up (`student.warmup`) on the teacher's responses or the
references (`student.warmup_target`; a null warm-up skips it), by SFT or by logit distillation from the
teacher (`student.warmup_loss`). Checkpoints resume like distillation's."""

from __future__ import annotations

import mlflow

from semflow.caching import StageKey
from semflow.config import DistillConfig, GenerationConfig, ModelConfig, StudentConfig
from semflow.runtime import RunContext
from semflow.store import StageManifest
from tasks._stage import Outputs, cached_stage, read_output, run_stage, work_dir


def key(teacher: ModelConfig, student: StudentConfig, generation: GenerationConfig, distill: DistillConfig,
        generate_teacher: StageManifest) -> StageKey:
    config = {"teacher": teacher, "student": student,
              # what the warm-up reads from elsewhere: prompt rendering, sequence limits, eval settings
              "prompting": {"system_prompt": generation.system_prompt, "max_prompt_tokens": generation.max_prompt_tokens,
                            "on_long_prompt": generation.on_long_prompt},
              "limits": {"max_seq_tokens": distill.max_seq_tokens, "chunk_size": distill.chunk_size,
                         "eval_max_new_tokens": distill.eval_max_new_tokens, "eval_batch_size": distill.eval_batch_size}}
    return StageKey(stage="init_student", config=config,
                    upstream={"responses": generate_teacher.output("responses").digest})


@cached_stage(key)
def init_student(teacher: ModelConfig, student: StudentConfig, generation: GenerationConfig, distill: DistillConfig,
                 generate_teacher: StageManifest, run: RunContext) -> StageManifest:
    from components.distill.data import calibration_batches
    from components.distill.recipe import heal_student
    from components.models import build_student, load_model

    stage_key = key(teacher, student, generation, distill, generate_teacher)

    def body(out: Outputs):
        t = load_model(teacher, run.model_cache)
        responses = read_output(generate_teacher, "responses")
        ranked = student.init == "prune" and student.keep_layers is None and student.select in ("block_influence", "angular")
        calibration = calibration_batches(t.tokenizer, responses, generation, student.calibration_rows) if ranked else None
        s = build_student(student, t, run.model_cache, calibration)
        metrics = {"student_layers": float(s.model.config.num_hidden_layers),
                   "student_parameters_m": sum(p.numel() for p in s.model.parameters()) / 1e6,
                   "teacher_parameters_m": sum(p.numel() for p in t.model.parameters()) / 1e6}
        previews = {}
        if student.warmup is not None:
            log_step = lambda step, m: mlflow.log_metrics({f"warmup/{k}": v for k, v in m.items()}, step=step)
            healed = heal_student(t, s, responses, generation, student.warmup, work_dir(stage_key, run) / "checkpoints",
                                  distill, on_log=log_step, eval_initial=student.eval_initial,
                                  target=student.warmup_target, loss=student.warmup_loss)
            metrics.update(healed.metrics)
            out.table("eval", healed.samples)
            previews["eval"] = healed.samples
        s.model.save_pretrained(out.root / "student")
        s.tokenizer.save_pretrained(out.root / "student")
        out.folder("student")
        mlflow.set_tags({"semflow.student": s.name, "semflow.kept_layers": str(s.kept_layers)})
        return metrics, previews

    return run_stage(stage_key, run, body)
