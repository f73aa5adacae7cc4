"""Generation throughput: the static-cache path (CUDA graphs on GPU) vs plain `generate`, one run.

    .venv/bin/python bench/bench_fast_generation.py --device cpu --shapes 135m --layers 2 --batch 4 \\
        --prompt 16 --new 16                                   # a CPU smoke run of both paths
    python3 bench/bench_fast_generation.py --device cuda --dtype bfloat16 --json out.json   # issue 7 shapes

Models are random-init with SmolLM2 shapes (bench/_shapes.py). Both paths go through
components.generation.batched.decode_batches, the function every generating stage calls, with the same
prompts (random token ids, all `--prompt` long), batch, sampling settings and seed. Tokens counted are
the tokens each row generated up to and including its EOS. The static path's first call (graph capture,
allocator warm-up) is timed apart from its steady-state call.

Greedy agreement: the share of rows whose greedy continuation is token-identical on both paths, in the
bench dtype and in float32 (float32 must be 100%: same function; bf16 may drift on near-ties because
the static cache attends over a padded, masked window with other kernels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["135m", "360m", "1.7b"])
    parser.add_argument("--layers", type=int, default=None, help="override the shapes' layer count")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--agreement-rows", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from bench._shapes import llama
    from components.generation.batched import decode_batches
    from components.generation.static import Sampling

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 49152, (args.prompt,), generator=g).tolist() for _ in range(args.batch)]
    sampling = Sampling(do_sample=True, top_k=args.top_k)

    def run(model, engine, rows, new, how=sampling):
        sync()
        t0 = time.perf_counter()
        out = decode_batches(model, rows, max_new_tokens=new, sampling=how, eos=[2], pad_id=0,
                             batch_size=len(rows), seed=0, engine=engine)
        sync()
        return out, time.perf_counter() - t0

    results = []
    for shape in args.shapes:
        model = llama(shape, args.layers, 0, args.device, args.dtype).eval()
        run(model, "plain", prompts[:2], 4)  # warm-up: kernels, cuBLAS handles
        plain, plain_s = run(model, "plain", prompts, args.new)
        _, first_s = run(model, "static", prompts, args.new)
        fast, fast_s = run(model, "static", prompts, args.new)
        again, _ = run(model, "static", prompts, args.new)
        plain_tok, fast_tok = sum(map(len, plain)), sum(map(len, fast))
        rows = prompts[: args.agreement_rows]
        greedy_plain, _ = run(model, "plain", rows, 64, Sampling())
        greedy_fast, _ = run(model, "static", rows, 64, Sampling())
        agree = sum(a == b for a, b in zip(greedy_plain, greedy_fast, strict=True)) / len(rows)
        row = {
            "shape": shape, "batch": args.batch, "prompt": args.prompt, "new": args.new, "dtype": args.dtype,
            "plain_tokens": plain_tok, "plain_seconds": plain_s, "plain_tok_s": plain_tok / plain_s,
            "fast_tokens": fast_tok, "fast_seconds": fast_s, "fast_tok_s": fast_tok / fast_s,
            "fast_first_call_seconds": first_s, "speedup": (fast_tok / fast_s) / (plain_tok / plain_s),
            "sampling_reproducible": fast == again, "greedy_agreement": agree,
        }
        if shape == args.shapes[0]:
            model32 = model.float()
            g32_plain, _ = run(model32, "plain", rows, 64, Sampling())
            g32_fast, _ = run(model32, "static", rows, 64, Sampling())
            row["greedy_agreement_fp32"] = sum(a == b for a, b in zip(g32_plain, g32_fast, strict=True)) / len(rows)
        results.append(row)
        print(json.dumps(row), flush=True)
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    print(f"\nB{args.batch}, {args.prompt} prompt + {args.new} new tokens, sampling top_k={args.top_k}, "
          f"{args.device} {args.dtype}")
    print(f"{'shape':>6} {'plain tok/s':>12} {'static tok/s':>13} {'speedup':>8} {'1st call s':>10} "
          f"{'greedy same':>11} {'fp32 same':>9}")
    for r in results:
        fp32 = f"{r['greedy_agreement_fp32']:.0%}" if "greedy_agreement_fp32" in r else "-"
        print(f"{r['shape']:>6} {r['plain_tok_s']:12,.0f} {r['fast_tok_s']:13,.0f} {r['speedup']:7.1f}x "
              f"{r['fast_first_call_seconds']:10.2f} {r['greedy_agreement']:11.0%} {fp32:>9}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
