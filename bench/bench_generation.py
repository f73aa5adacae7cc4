"""Teacher generation throughput: batch 1 vs batched, measured side by side in one run.

    .venv/bin/python bench/bench_generation.py                       # 16 default prompts, batch 1 vs 8
    .venv/bin/python bench/bench_generation.py --batch-sizes 1 4 8 16 --max-new-tokens 64
    .venv/bin/python bench/bench_generation.py --load                # also GGUF convert vs cached load

Prompts are the default preset's built-in prompts (the real mix of long articles and short
instructions). Greedy decoding, so every batch size produces the same tokens and the comparison is
of speed alone; the script checks that and reports it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from components.data import build_prompts  # noqa: E402
from components.generation import format_prompts, generate  # noqa: E402
from components.models import load_model  # noqa: E402
from semflow.config import BuiltinPrompts, GenerationConfig, ModelConfig, SplitConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=16, help="number of prompts (3 families mixed)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--load", action="store_true", help="time GGUF conversion (fresh cache) vs cached load")
    args = parser.parse_args()

    model_cfg = ModelConfig(spec=args.spec, device=args.device, dtype=args.dtype)
    if args.load:
        with tempfile.TemporaryDirectory() as cache:
            convert = load_model(model_cfg, cache)
            cached = load_model(model_cfg, cache)
        print(f"load: {convert.origin} {convert.load_seconds:.2f}s, {cached.origin} {cached.load_seconds:.2f}s, "
              f"ratio {convert.load_seconds / cached.load_seconds:.1f}x")
    loaded = load_model(model_cfg)

    per_family = -(-args.prompts // 3)
    frame = build_prompts(BuiltinPrompts(per_family=per_family), SplitConfig()).head(args.prompts)
    prompts = format_prompts(loaded.tokenizer, frame["instruction"].tolist(), frame["input"].tolist())

    rows, reference = [], None
    for batch_size in args.batch_sizes:
        cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
        out = generate(loaded.model, loaded.tokenizer, prompts, cfg, progress=False)
        same = reference is None or out.token_ids == reference
        reference = reference or out.token_ids
        rows.append((batch_size, sum(out.new_tokens), out.seconds, out.tokens_per_second, same))

    base = rows[0][3]
    print(f"\nteacher {args.spec} on {loaded.model.device}, {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}")
    print(f"{'batch':>5} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'vs first':>8} {'same tokens':>11}")
    for batch_size, tokens, seconds, tps, same in rows:
        print(f"{batch_size:>5} {tokens:>7} {seconds:>8.1f} {tps:>7.1f} {tps / base:>7.2f}x {str(same):>11}")


if __name__ == "__main__":
    main()
