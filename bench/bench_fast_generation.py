"""Generation throughput of every decoding path, side by side in one run: plain `generate`,
transformers' static cache, the StaticDecoder and the fused decoder (eager step or Inductor-compiled).

    .venv/bin/python bench/bench_fast_generation.py --device cpu --dtype float32 --shapes 135m --layers 2 \\
        --batch 4 --prompt 32 --new 32 --repeats 3                       # the CPU run of bench/results/gpu_decode.md
    python3 bench/bench_fast_generation.py --device cuda --dtype bfloat16 --json out.json   # issue 18's shapes

Engines (`--engines`):
  plain          components.generation.batched.decode_batches(engine="plain"): `model.generate`
  hf_static      `model.generate(..., cache_implementation="static")`: transformers' static cache; on CUDA
                 transformers compiles the forward itself (its first call is timed apart)
  static         decode_batches(engine="static"): StaticDecoder (CUDA graph per step on GPU)
  fused          FusedDecoder, eager step (packed GQA, fused qkv and gate/up, sampling inside the top-k;
                 CUDA graph on GPU)
  fused_compiled FusedDecoder with the step compiled by Inductor (mode default), then graph-captured on GPU
  fused_autotune the same with mode max-autotune-no-cudagraphs (not in the default list: long compile)
  fused_sdpa     fused_compiled with SDPA(enable_gqa=True) instead of the grouped matmuls

Models are random-init with SmolLM2 shapes (bench/_shapes.py); every engine gets the same prompts (random
token ids, all `--prompt` long), batch (one batch of `--batch` rows), sampling settings (top_k, seed 0)
and counts the tokens each row generated up to and including its EOS. Each engine's first call
(compilation, graph capture, allocator warm-up) is timed apart; then `--repeats` timed calls run round
robin over the engines, so drift on a shared machine hits all engines alike. "1st step s" is the fused
decoder's first decode step: Inductor's compilation when the step is compiled (cold unless
TORCHINDUCTOR_CACHE_DIR, default ~/.cache/semflow/models/inductor, already holds it). The table gives the mean
tok/s with a 95% t-interval over the repeats and each engine's ratio to plain and to hf_static (ratio of
means), and the same per CPU second of this process (user+sys, all threads), which drifts less than wall
time on a shared machine; the whole run's wall and CPU seconds are printed above the table.

Greedy agreement: the share of `--agreement-rows` rows whose 64-token greedy continuation is identical to
plain `generate`'s, in the bench dtype and (first shape) in float32, where it must be 100% for every
engine: the same function. bf16 may drift on near-ties (other kernels, padded cache windows).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = ("plain", "hf_static", "static", "fused", "fused_compiled", "fused_autotune", "fused_sdpa")
DEFAULT_ENGINES = ("plain", "hf_static", "static", "fused", "fused_compiled")
FUSED = {"fused": ("none", "grouped"), "fused_compiled": ("default", "grouped"),
         "fused_autotune": ("max-autotune-no-cudagraphs", "grouped"), "fused_sdpa": ("default", "sdpa")}


def t_interval(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean (0 for a single value)."""
    if len(values) < 2:
        return 0.0
    from scipy.stats import t

    return t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["135m", "360m", "1.7b"])
    parser.add_argument("--layers", type=int, default=None, help="override the shapes' layer count")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per engine after its first call")
    parser.add_argument("--engines", nargs="+", default=list(DEFAULT_ENGINES), choices=ENGINES)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--agreement-rows", type=int, default=16)
    parser.add_argument("--agreement-new", type=int, default=64)
    parser.add_argument("--agreement-engines", nargs="+", default=None, choices=ENGINES,
                        help="engines checked for greedy agreement (default: all of --engines; each compiled "
                             "engine compiles its greedy step anew, so a GPU run may check fewer)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if "plain" not in args.engines:
        parser.error("--engines must include plain (the ratios' baseline)")
    checked = ["plain"] + [e for e in (args.agreement_engines or args.engines) if e != "plain"]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from bench._shapes import llama
    from components.generation.batched import decode_batches
    from components.generation.fused import FusedDecoder
    from components.generation.padding import pad_rows
    from components.generation.static import Sampling, static_length
    from components.rng import seeded

    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 49152, (args.prompt,), generator=g).tolist() for _ in range(args.batch)]
    sampling = Sampling(do_sample=True, top_k=args.top_k)
    notes: dict[str, float] = {}  # the fused decoders' first-step (compile) seconds, per engine

    def generate(model, engine, rows, new, how):
        if engine in ("plain", "static"):
            return decode_batches(model, rows, max_new_tokens=new, sampling=how, eos=[2], pad_id=0,
                                  batch_size=len(rows), seed=0, engine=engine)
        with seeded(0):  # decode_batches' seeding of batch 0
            if engine == "hf_static":
                ids, mask = pad_rows(rows, 0, device=model.device)
                kwargs = dict(do_sample=True, top_k=how.top_k or None, temperature=how.temperature,
                              top_p=how.top_p) if how.do_sample else dict(do_sample=False)
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, pad_token_id=0,
                                     eos_token_id=[2], cache_implementation="static", **kwargs)
                return [_until_eos(t) for t in out[:, ids.shape[1]:].tolist()]
            compile_mode, attention = FUSED[engine]
            decoder = FusedDecoder(model, len(rows), static_length(max(map(len, rows)), new), how, [2], 0,
                                   compile=compile_mode, attention=attention)
            out = decoder.generate(rows, new)
            if decoder.first_step_seconds is not None:
                notes.setdefault(engine, decoder.first_step_seconds)
            return out

    def timed(model, engine, rows, new, how=sampling):
        sync()
        t0, c0 = time.perf_counter(), cpu_seconds()
        out = generate(model, engine, rows, new, how)
        sync()
        timed.cpu = cpu_seconds() - c0
        return out, time.perf_counter() - t0

    results = []
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    for shape in args.shapes:
        notes.clear()
        model = llama(shape, args.layers, 0, args.device, args.dtype).eval()
        timed(model, "plain", prompts[:2], 4)  # warm-up: kernels, cuBLAS handles
        rows = {e: {"engine": e, "seconds": [], "tok_s": [], "tok_per_cpu_s": [], "sampling_reproducible": True}
                for e in args.engines}
        outputs = {}
        for engine in args.engines:  # first calls: compilation, capture
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            outputs[engine], rows[engine]["first_call_seconds"] = timed(model, engine, prompts, args.new)
            if cuda:
                rows[engine]["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        for _ in range(args.repeats):
            for engine in args.engines:
                out, seconds = timed(model, engine, prompts, args.new)
                rows[engine]["seconds"].append(seconds)
                rows[engine]["tok_s"].append(sum(map(len, out)) / seconds)
                rows[engine]["tok_per_cpu_s"].append(sum(map(len, out)) / timed.cpu)
                rows[engine]["sampling_reproducible"] &= out == outputs[engine]
        greedy_rows = prompts[: args.agreement_rows]
        greedy = {e: timed(model, e, greedy_rows, args.agreement_new, Sampling())[0] for e in checked}
        fp32 = None
        if shape == args.shapes[0] and args.dtype != "float32":
            model32 = model.float()
            fp32 = {e: timed(model32, e, greedy_rows, args.agreement_new, Sampling())[0] for e in checked}
        elif shape == args.shapes[0]:
            fp32 = greedy
        plain_mean = statistics.mean(rows["plain"]["tok_s"])
        hf_mean = statistics.mean(rows["hf_static"]["tok_s"]) if "hf_static" in rows else None
        plain_cpu = statistics.mean(rows["plain"]["tok_per_cpu_s"])
        for engine, row in rows.items():
            mean = statistics.mean(row["tok_s"])
            row.update(
                tok_per_cpu_s_mean=statistics.mean(row["tok_per_cpu_s"]),
                tok_per_cpu_s_ci95=t_interval(row["tok_per_cpu_s"]),
                cpu_vs_plain=statistics.mean(row["tok_per_cpu_s"]) / plain_cpu,
                shape=shape, batch=args.batch, prompt=args.prompt, new=args.new, dtype=args.dtype,
                layers=args.layers, tok_s_mean=mean, tok_s_ci95=t_interval(row["tok_s"]),
                vs_plain=mean / plain_mean, vs_hf_static=mean / hf_mean if hf_mean else None,
                first_step_seconds=notes.get(engine),
                greedy_agreement=_agree(greedy[engine], greedy["plain"]) if engine in greedy else None,
                greedy_agreement_fp32=_agree(fp32[engine], fp32["plain"]) if fp32 and engine in fp32 else None,
            )
            results.append(row)
            print(json.dumps(row), flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0

    print(f"\nB{args.batch}, {args.prompt} prompt + {args.new} new tokens, sampling top_k={args.top_k}, "
          f"{args.device} {args.dtype}, {args.repeats} timed calls per engine (mean, 95% CI), "
          f"layers={args.layers or 'as the shape'}; run {wall:.0f} s wall, {cpu:.0f} s CPU")
    print(f"{'shape':>6} {'engine':>15} {'tok/s':>10} {'+-95%':>8} {'x plain':>8} {'x hf_static':>11} "
          f"{'tok/CPU s':>10} {'+-95%':>7} {'x plain':>8} {'1st call s':>10} {'1st step s':>10} {'greedy same':>11} {'fp32 same':>9} {'repro':>5}")
    for r in results:
        hf = f"{r['vs_hf_static']:10.2f}x" if r["vs_hf_static"] else f"{'-':>11}"
        comp = f"{r['first_step_seconds']:10.2f}" if r["first_step_seconds"] is not None else f"{'-':>10}"
        fp32 = f"{r['greedy_agreement_fp32']:.0%}" if r["greedy_agreement_fp32"] is not None else "-"
        same = f"{r['greedy_agreement']:.0%}" if r["greedy_agreement"] is not None else "-"
        print(f"{r['shape']:>6} {r['engine']:>15} {r['tok_s_mean']:10,.0f} {r['tok_s_ci95']:8,.0f} "
              f"{r['vs_plain']:7.2f}x {hf} {r['tok_per_cpu_s_mean']:10,.1f} {r['tok_per_cpu_s_ci95']:7,.1f} "
              f"{r['cpu_vs_plain']:7.2f}x {r['first_call_seconds']:10.2f} {comp} {same:>11} "
              f"{fp32:>9} {'yes' if r['sampling_reproducible'] else 'NO':>5}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "wall_seconds": wall, "cpu_seconds": cpu,
                                         "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
                                         "results": results}, indent=2, default=str))


def _until_eos(tokens: list[int], eos: int = 2) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def _agree(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


if __name__ == "__main__":
    main()
