"""Which teacher layers should the pruned student keep? Greedy answers of pruned SmolLM2 students, no
healing, side by side in one run: ROUGE-L against the references, the share of answers with a 4-gram
repeated 3+ times, distinct-2, and the block-influence / angular rankings of the teacher's layers.

    .venv/bin/python bench/bench_distill_layers.py --responses <generate_teacher artifact>/responses.parquet \
        --variants every_other:16,evenly:24,block_influence:24,angular:24 --prompts 12 --json out.json

The responses table (the teacher's answers, with splits) comes from a pipeline run: its train rows
calibrate the rankings, its test rows are answered. CPU seconds (user + sys of this process) are printed
per variant beside wall seconds, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", required=True, type=Path)
    parser.add_argument("--variants", default="every_other:16,evenly:24,block_influence:24,angular:24")
    parser.add_argument("--prompts", type=int, default=12, help="test prompts answered per variant")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import pandas as pd

    from components.distill.data import calibration_batches
    from components.distill.evaluate import distinct_n, repetition_share, rouge_l
    from components.distill.recipe import greedy_outputs, scored_test_split
    from components.models import load_model
    from components.models.student import layer_similarity, prune_student, select_layers
    from semflow.config import DistillConfig, GenerationConfig, ModelConfig

    responses = pd.read_parquet(args.responses)
    teacher = load_model(ModelConfig(spec="smollm2-135m-instruct", device="cpu"))
    generation = GenerationConfig()
    t0, c0 = time.perf_counter(), cpu_seconds()
    sim = layer_similarity(teacher.model, calibration_batches(teacher.tokenizer, responses, generation, args.calibration))
    n = teacher.model.config.num_hidden_layers
    influence = [round(1 - float(sim["cos"][i, i + 1]), 4) for i in range(n)]
    print(f"calibration: {time.perf_counter() - t0:.1f} s wall, {cpu_seconds() - c0:.1f} s CPU")
    print("block influence per layer:", influence)
    test, references = scored_test_split(responses)
    test, references = test.head(args.prompts), references[: args.prompts]
    cfg = DistillConfig(eval_max_new_tokens=args.new_tokens)
    rows = [{"variant": "teacher", "layers": n, "kept": list(range(n)),
             "rougeL": sum(rouge_l(test["response"].tolist(), references)) / len(test),
             "repetition_share": repetition_share(test["response"].tolist()),
             "distinct_2": distinct_n(test["response"].tolist()), "wall_s": 0.0, "cpu_s": 0.0,
             "sample": test["response"].iloc[0][:160]}]
    for spec in args.variants.split(","):
        method, keep = spec.split(":")
        t0, c0 = time.perf_counter(), cpu_seconds()
        kept = select_layers(sim, n, int(keep), method)
        student = prune_student(teacher.model, kept)
        texts = greedy_outputs(student, teacher.tokenizer, test, cfg, generation)
        rows.append({"variant": method, "layers": len(kept), "kept": kept,
                     "rougeL": sum(rouge_l(texts, references)) / len(texts), "repetition_share": repetition_share(texts),
                     "distinct_2": distinct_n(texts), "wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0,
                     "sample": texts[0][:160]})
        r = rows[-1]
        print(f"{method:16s} {len(kept):2d} layers  ROUGE-L {100 * r['rougeL']:5.1f}  rep {r['repetition_share']:.2f}  "
              f"distinct-2 {r['distinct_2']:.2f}  {r['wall_s']:.0f} s wall {r['cpu_s']:.0f} s CPU  dropped "
              f"{sorted(set(range(n)) - set(kept))}\n    {r['sample']!r}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"influence": influence, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
