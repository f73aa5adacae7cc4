"""Distillation step cost and SCRG cost, measured side by side in one run.

    .venv/bin/python bench/bench_distill.py                       # CPU defaults: B4 x T256, SmolLM2 shapes
    .venv/bin/python bench/bench_distill.py --batch 16 --seq 1024 --device cuda --dtype bfloat16 --json out.json

Models are random-init with SmolLM2 shapes (teacher: 135M, 30 layers; student: 15 layers of it,
as the default pipeline prunes), so nothing is downloaded. Each training variant runs in its own
subprocess, so its peak memory is its own (CPU: peak RSS above the RSS after building the models;
CUDA: torch.cuda.max_memory_allocated). Variants:

- sft:        student forward + cross-entropy + backward (no teacher)
- naive_fkl:  teacher forward and student forward with full [B, T, V] fp32 logits, forward KL
- chunked_fkl: forward KL through components.distill.objective (per-chunk logits and gradients)
- mgsr:       SFT + DAC-KL + span correlation, chunked, f_sub in the optimizer
- floor:      teacher forward (no grad) + the sft step: what any distillation step must pay

SCRG: score + correct + regenerate one batch vs plain student sampling of the same batch.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ["sft", "floor", "naive_fkl", "chunked_fkl", "mgsr"]


def build(args):
    from bench._shapes import llama

    teacher = llama(args.teacher_shape, args.teacher_layers, 0, args.device, args.dtype).eval()
    return teacher, llama(args.student_shape, args.student_layers, 1, args.device, args.dtype)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_variant(args) -> dict:
    import torch
    import torch.nn.functional as F

    from components.distill.objective import Objective, student_loss_fn
    from semflow.config import DistillConfig

    teacher, student = build(args)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 49152, (args.batch, args.seq), generator=g).to(args.device)
    prompt = args.seq // 4
    labels = ids.clone()
    labels[:, :prompt] = -100
    pairs = torch.rand(args.batch, args.seq, generator=g).to(args.device) < 0.5
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "pair_start": pairs}

    method = {"sft": "sft", "floor": "sft", "naive_fkl": "kd_fkl", "chunked_fkl": "kd_fkl", "mgsr": "mgsr"}[args.variant]
    objective = Objective(DistillConfig(method=method, chunk_size=args.chunk)).to(args.device)
    loss_fn = student_loss_fn(student, teacher, objective, args.chunk)
    params = list(student.parameters()) + list(objective.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step():
        if args.variant == "naive_fkl":
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits.float()
            s_logits = student(input_ids=ids).logits.float()
            mask = labels[:, 1:] != -100
            t, s = t_logits[:, :-1][mask], s_logits[:, :-1][mask]
            loss = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
        else:
            if args.variant == "floor":
                with torch.no_grad():
                    teacher.base_model(input_ids=ids)
            loss, _ = loss_fn(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    step()  # warm-up (allocator, optimizer state)
    sync()
    base = rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    return {"variant": args.variant, "seconds": sorted(times)[len(times) // 2], "peak_mb": peak}


def run_scrg(args) -> dict:
    import torch

    from components.distill.scrg import sample_responses, correct_and_regenerate
    from components.models.tiny import byte_tokenizer
    from semflow.config import ScrgConfig

    teacher, student = build(args)
    tok = byte_tokenizer()  # ids only matter for padding/EOS; the models' vocab covers them
    g = torch.Generator().manual_seed(1)
    batch = args.scrg_batch or args.batch
    prompts = [torch.randint(3, 49152, (args.scrg_prompt,), generator=g).tolist() for _ in range(batch)]
    cfg = ScrgConfig(max_new_tokens=args.scrg_new, batch_size=batch, seed=0)  # engine auto: static on CUDA
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t0

    plain_cfg = cfg.model_copy(update={"engine": "plain"})
    sample_responses(student, tok, prompts[:2], cfg.model_copy(update={"max_new_tokens": 4}))  # warm-up
    sample_responses(student, tok, prompts[:2], plain_cfg.model_copy(update={"max_new_tokens": 4}))
    samples, sample_s = timed(lambda: sample_responses(student, tok, prompts, cfg))
    _, plain_s = timed(lambda: sample_responses(student, tok, prompts, plain_cfg))
    result, scrg_s = timed(lambda: correct_and_regenerate(teacher, student, tok, prompts, samples, cfg, progress=False))
    return {"sample_seconds": sample_s, "plain_sample_seconds": plain_s, "scrg_seconds": scrg_s,
            "ratio": scrg_s / sample_s, "corrected": sum(bool(p) for p in result.positions),
            "regenerated_tokens": sum(result.regenerated), "sampled_tokens": sum(len(x) for x in samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--teacher-shape", default="135m", choices=["135m", "360m", "1.7b"])
    parser.add_argument("--student-shape", default="135m", choices=["135m", "360m", "1.7b"])
    parser.add_argument("--teacher-layers", type=int, default=None, help="default: the shape's")
    parser.add_argument("--student-layers", type=int, default=15, help="0: the shape's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--scrg-batch", type=int, default=0, help="SCRG batch (default: --batch)")
    parser.add_argument("--scrg-prompt", type=int, default=64)
    parser.add_argument("--scrg-new", type=int, default=64)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_scrg(args) if args.variant == "scrg" else run_variant(args)))
        return

    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json")]
    if args.json:
        passthrough = [a for a in passthrough if a != str(args.json)]
    results = {}
    for variant in VARIANTS + ["scrg"]:
        out = subprocess.run([sys.executable, __file__, *passthrough, "--variant", variant],
                             capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{variant:12s} {results[variant]}", flush=True)

    naive = results["naive_fkl"]
    floor = results["floor"]["seconds"]
    print(f"\nB{args.batch} x T{args.seq}, chunk {args.chunk}, {args.device} {args.dtype}, "
          f"teacher {args.teacher_shape} ({args.teacher_layers or 'all'} layers) -> "
          f"student {args.student_shape} ({args.student_layers or 'all'} layers)")
    print(f"{'variant':12s} {'step s':>8s} {'peak MB':>9s} {'x naive FKL':>12s} {'x floor':>8s}")
    for v in VARIANTS:
        r = results[v]
        print(f"{v:12s} {r['seconds']:8.3f} {r['peak_mb']:9.0f} {r['seconds'] / naive['seconds']:12.2f} "
              f"{r['seconds'] / floor:8.2f}")
    s = results["scrg"]
    print(f"SCRG: sample {s['sample_seconds']:.2f}s (plain generate {s['plain_sample_seconds']:.2f}s), "
          f"score+correct+regenerate {s['scrg_seconds']:.2f}s, ratio {s['ratio']:.2f}x (target <= 1.5x); "
          f"{s['corrected']} rows corrected, {s['regenerated_tokens']} of {s['sampled_tokens']} tokens regenerated")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
