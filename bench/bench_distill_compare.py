"""The distillation evidence table on real instructions (Dolly with human references): `semflow compare`
on configs/dolly.yaml in one of two sizes, timed.

    .venv/bin/python bench/bench_distill_compare.py --size cpu --data /work/shared/data/dolly/dev.jsonl
    .venv/bin/python bench/bench_distill_compare.py --size gpu --data /path/to/dolly/dev.jsonl --workdir /tmp/dolly-gpu

Sizes:
- cpu: the preset as it is (first 160 rows of the file, 120 train / 40 test by a seeded split, 12 steps,
  64 new tokens): about 70 minutes on 2 cores for all 13 methods x 3 seeds (bench/results/distill.md).
- gpu: 800 train / 200 test rows of a 1,000-row file (split seed 7 gives exactly that split of Dolly's
  dev.jsonl; ids from the reference column, since three Dolly prompts repeat with different answers),
  3 epochs at batch 16, 128 new tokens, bf16 teacher on cuda.
Prints the command it runs, the table (semflow compare's own output) and CPU + wall seconds; `--json`
receives the table. Methods and seeds default to all and 0,1,2.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GPU = [
    "data.prompts.limit=null", "data.prompts.fields={reference: output, id: output}",
    "data.split={train: 0.8, val: 0.0, test: 0.2, seed: 7}",
    "teacher.dtype=bfloat16", "teacher.device=cuda",
    "generation.max_new_tokens=128", "generation.batch_size=64",
    "student.warmup={epochs: 1, lr: 5.0e-4, batch_size: 16, checkpoint_every: 100, eval_every: 100}",
    "scrg.max_new_tokens=128", "scrg.batch_size=64",
    "distill.eval_max_new_tokens=128", "distill.eval_batch_size=64", "distill.chunk_size=2048",
    "distill.train={epochs: 3, lr: 1.0e-4, batch_size: 16, checkpoint_every: 100, eval_every: 100}",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--data", required=True, type=Path, help="a Dolly-style JSONL (instruction, input, output)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/semflow-dolly"))
    parser.add_argument("--methods", default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more overrides, after the size's (e.g. teacher.spec=/path/to/converted/teacher)")
    args = parser.parse_args()

    sets = [f"data.prompts.path={args.data}", f"runtime.workdir={args.workdir}"] + (GPU if args.size == "gpu" else [])
    sets += args.set
    # the CLI through this interpreter: the same on a machine without the project's .venv (the GPU image)
    cmd = [sys.executable, "-c", "from semflow.cli import main; main()", "compare",
           "-c", str(ROOT / "configs" / "dolly.yaml"), "--seeds", args.seeds]
    if args.methods:
        cmd += ["--methods", args.methods]
    for s in sets:
        cmd += ["--set", s]
    if args.json:
        cmd += ["--json", str(args.json)]
    print("$", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    code = subprocess.call(cmd, cwd=ROOT)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{args.size} size: {time.perf_counter() - start:.0f} s wall, {usage.ru_utime + usage.ru_stime:.0f} s CPU "
          f"(exit {code})")
    sys.exit(code)


if __name__ == "__main__":
    main()
