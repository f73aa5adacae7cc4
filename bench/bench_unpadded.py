"""Padded vs padding-free (`unpadded`) training steps on the default warm-up, side by side in one run.

The student is pruned from the real teacher as `configs/default.yaml` prunes it, and trained on the
teacher's answers (a generate_teacher artifact) with the warm-up's settings, `--steps` AdamW steps per
run, alternating padded and unpadded runs from the same initial weights (`--rounds` of each, so machine
drift hits both). Reports seconds per step, the ratio, the real and the padded token counts, and how far
the unpadded run ends from the padded one (the loss of every step, the largest weight difference), which
should be float rounding only.

    .venv/bin/python bench/bench_unpadded.py --responses <generate_teacher artifact>/responses.parquet \
        --steps 6 --rounds 2 --json /tmp/unpadded.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--responses", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import pandas as pd
    import torch

    from components.distill import Objective, build_examples, collate, student_loss_fn
    from components.distill.data import calibration_batches
    from components.distill.recipe import training_data
    from components.models import build_student, load_model
    from components.training import Trainer
    from components.training.trainer import label_tokens
    from semflow.config import load_config

    cfg = load_config(args.config, args.overrides)
    responses = pd.read_parquet(args.responses)
    teacher = load_model(cfg.teacher)
    tok = teacher.tokenizer
    calibration = calibration_batches(tok, responses, cfg.generation, cfg.student.calibration_rows)
    initial = build_student(cfg.student, teacher, None, calibration).model
    distill = cfg.distill.model_copy(update={"method": "seqkd"})
    data = training_data("seqkd", responses, None, tok, cfg.generation, distill)
    examples, _ = build_examples(tok, data.prompts, data.sequences, distill, None, data.supervised, data.targets)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    base = cfg.student.warmup.model_copy(update={"max_steps": args.steps, "checkpoint_every": args.steps + 1,
                                                 "eval_every": args.steps + 1})

    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.rounds):
        for unpadded in (False, True):
            student = copy.deepcopy(initial)
            trainer = Trainer(student, student_loss_fn(student, None, Objective(distill), distill.chunk_size), examples,
                              lambda ex: collate(ex, pad), base.model_copy(update={"unpadded": unpadded}),
                              tempfile.mkdtemp(), progress=False, loss_weight=label_tokens)
            padded_tokens = sum(len(batch) * max(len(e.prompt) + len(e.response) for e in batch)
                                for step in range(args.steps) for batch in trainer.micro_batches(step))
            result = trainer.train()
            runs[unpadded].append({"seconds": result.seconds, "tokens": result.tokens, "padded_tokens": padded_tokens,
                                   "losses": [h["loss"] for h in result.history],
                                   "weights": {k: v.detach().clone() for k, v in student.state_dict().items()}})
            print(f"unpadded={unpadded}: {result.seconds / args.steps:.2f} s/step", flush=True)

    a, b = runs[False][0], runs[True][0]
    max_weight_diff = max(float((a["weights"][k] - b["weights"][k]).abs().max()) for k in a["weights"])
    max_loss_rel = max(abs(x - y) / abs(x) for x, y in zip(a["losses"], b["losses"], strict=True))
    per_step = {u: statistics.median(r["seconds"] for r in rs) / args.steps for u, rs in runs.items()}
    report = {
        "config": args.config, "overrides": args.overrides, "steps": args.steps, "rounds": args.rounds,
        "batch_size": base.batch_size, "examples": len(examples), "threads": torch.get_num_threads(),
        "seconds_per_step_padded": per_step[False], "seconds_per_step_unpadded": per_step[True],
        "speedup": per_step[False] / per_step[True],
        "real_tokens": a["tokens"], "padded_tokens": a["padded_tokens"],
        "max_loss_rel_diff": max_loss_rel, "max_weight_abs_diff": max_weight_diff,
        "seconds": {str(u): [r["seconds"] for r in rs] for u, rs in runs.items()},
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(f"| training | s/step (median of {args.rounds}) | tokens through the model |")
    print("|---|---:|---:|")
    print(f"| padded micro-batches of {base.batch_size} | {per_step[False]:.2f} | {a['padded_tokens']:,} |")
    print(f"| unpadded (one example per pass) | {per_step[True]:.2f} | {a['tokens']:,} |")
    print(f"speed-up {report['speedup']:.2f}x; after {args.steps} steps: largest loss difference "
          f"{max_loss_rel:.1e} (relative), largest weight difference {max_weight_diff:.1e}")


if __name__ == "__main__":
    main()
