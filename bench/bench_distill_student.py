"""The distillation branch in one process, phase by phase, with CPU seconds: the student built and healed
(init_student), SCRG (scrg_correct), distillation (distill_student), each scored on the test split. For
choosing the default student (layers, warm-up, learning rates) without the pipeline's caching, whose
keys follow the source of every module a stage imports.

    .venv/bin/python bench/bench_distill_student.py -c configs/default.yaml \
        --responses <generate_teacher artifact>/responses.parquet --set student.layers=22 --out /tmp/s22
    # reuse a healed student (its folder from a previous --out) and try another distillation:
    .venv/bin/python bench/bench_distill_student.py -c configs/default.yaml --responses ... \
        --healed /tmp/s22 --set distill.train.lr=2e-4 --out /tmp/s22-lr2

Levers are chosen without the test split: `--select-share 0.3` drops the test rows and scores on a hashed
30 % of the train split instead (the rest trains), so the test split's CI stays unbiased for the one run
that reports it.

    .venv/bin/python bench/bench_distill_student.py -c configs/default.yaml --responses ... \
        --select-share 0.3 --set distill.train.lr=3e-4 --out /tmp/sel-lr3

Prints and writes (--out/metrics.json) the healed and distilled students' ROUGE-L, the paired bootstrap
CI of after - before, repetition share and distinct-2 for teacher, before, after, and CPU seconds
(user + sys) and wall seconds per phase.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def inner_split(responses, share: float, seed: int):
    """The responses with the test rows gone and a hashed `share` of the train rows relabelled "test": a
    selection split inside the train split. The hash is salted apart from the outer split's, so the inner
    split does not follow the outer one's order."""
    from components.data.splits import split_unit

    if not 0 < share < 1:
        raise ValueError(f"--select-share must be in (0, 1), got {share}")
    kept = responses[responses["split"] != "test"].copy()
    inner = kept["id"].map(lambda i: split_unit(f"select:{i}", seed) < share)
    kept.loc[(kept["split"] == "train") & inner, "split"] = "test"
    return kept.reset_index(drop=True)


class Clock:
    def __init__(self):
        self.phases: dict[str, dict[str, float]] = {}

    def __call__(self, name):
        clock = self

        class Phase:
            def __enter__(self):
                r = resource.getrusage(resource.RUSAGE_SELF)
                self.t, self.c = time.perf_counter(), r.ru_utime + r.ru_stime

            def __exit__(self, *exc):
                r = resource.getrusage(resource.RUSAGE_SELF)
                clock.phases[name] = {"wall_s": time.perf_counter() - self.t, "cpu_s": r.ru_utime + r.ru_stime - self.c}
                print(f"[{name}] {clock.phases[name]['wall_s']:.0f} s wall, {clock.phases[name]['cpu_s']:.0f} s CPU",
                      flush=True)

        return Phase()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--responses", required=True, type=Path)
    parser.add_argument("--healed", type=Path, help="a previous --out folder: reuse its healed student")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--select-share", type=float,
                        help="score on this hashed share of the train split, the test split unused (choosing levers)")
    parser.add_argument("--select-seed", type=int, default=0)
    args = parser.parse_args()

    import pandas as pd

    from components.distill.data import calibration_batches
    from components.distill.recipe import distil, heal_student
    from components.distill.scrg_table import scrg_table
    from components.models import build_student, load_model
    from components.models.loading import LoadedModel
    from semflow.config import load_config

    cfg = load_config(args.config, args.overrides)
    responses = pd.read_parquet(args.responses)
    if args.select_share is not None:
        try:
            responses = inner_split(responses, args.select_share, args.select_seed)
        except ValueError as e:
            parser.error(str(e))
    if args.healed:
        # a student healed on the whole train split has seen the selection prompts' answers
        if not (args.healed / "metrics.json").is_file():
            parser.error(f"--healed {args.healed} has no metrics.json: pass the --out folder of an earlier run")
        healed_on = json.loads((args.healed / "metrics.json").read_text())
        if (healed_on.get("select_share"), healed_on.get("select_seed", 0)) != (args.select_share, args.select_seed):
            parser.error(f"--healed {args.healed} was healed with --select-share {healed_on.get('select_share')} "
                         f"--select-seed {healed_on.get('select_seed', 0)}; this run uses {args.select_share} "
                         f"{args.select_seed}")
    clock = Clock()
    out = args.out
    shutil.rmtree(out / "ckpt", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_model(cfg.teacher)
    metrics: dict[str, object] = {"config": args.config, "overrides": args.overrides,
                                  "select_share": args.select_share, "select_seed": args.select_seed,
                                  "split_counts": responses["split"].value_counts().to_dict()}
    if args.healed:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.healed / "healed").to(teacher.model.device)
        student = LoadedModel("healed", model, teacher.tokenizer, 0.0, "local")
        healed_eval = pd.read_parquet(args.healed / "healed_eval.parquet")
        metrics["healed"] = json.loads((args.healed / "metrics.json").read_text())["healed"]
    else:
        with clock("init_student"):
            ranked = cfg.student.keep_layers is None and cfg.student.select in ("block_influence", "angular")
            calibration = (calibration_batches(teacher.tokenizer, responses, cfg.generation, cfg.student.calibration_rows)
                           if ranked else None)
            student = build_student(cfg.student, teacher, None, calibration)
            healed = heal_student(teacher, student, responses, cfg.generation, cfg.student.warmup, out / "ckpt" / "warmup",
                                  cfg.distill, eval_initial=cfg.student.eval_initial, progress=False,
                                  target=cfg.student.warmup_target, loss=cfg.student.warmup_loss)
        healed_eval = healed.samples
        student.model.save_pretrained(out / "healed")
        healed_eval.to_parquet(out / "healed_eval.parquet")
        metrics["healed"] = {"kept_layers": student.kept_layers, **healed.metrics}
        print("healed:", {k: round(v, 4) for k, v in healed.metrics.items() if "rouge" in k or "repetition" in k})
    table = None
    if cfg.distill.reads_scrg_table:
        with clock("scrg_correct"):
            table, scrg_metrics = scrg_table(teacher.model, student.model, teacher.tokenizer, responses, cfg.generation,
                                             cfg.scrg, progress=False)
        metrics["scrg"] = scrg_metrics
    with clock("distill_student"):
        run = distil(teacher, student, responses, table, cfg.distill, cfg.generation, cfg.scrg, out / "ckpt" / "distill",
                     before=healed_eval["student_healed"].fillna("").tolist(), progress=False)
    run.samples.to_parquet(out / "eval.parquet")
    pd.DataFrame(run.train.history).to_parquet(out / "history.parquet")
    metrics["distill"] = run.metrics
    metrics["phases"] = clock.phases
    keys = ("rougeL_teacher", "rougeL_before", "rougeL_after", "rougeL_gain", "rougeL_gain_ci_low", "rougeL_gain_ci_high",
            "rougeL_headroom", "rougeL_headroom_ci_low", "rougeL_headroom_ci_high",
            "repetition_share_teacher", "repetition_share_before", "repetition_share_after", "distinct2_teacher",
            "distinct2_before", "distinct2_after")
    print("distilled:", {k: round(run.metrics[k], 4) for k in keys})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))


if __name__ == "__main__":
    main()
