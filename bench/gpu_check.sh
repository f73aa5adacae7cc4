#!/usr/bin/env bash
# The GPU check of issues 7 and 18, one script, no network: the GPU tests, then the generation and
# training benchmarks on the issues' shapes; prints one table last and writes JSON and logs under $OUT.
# The parts' time limits add up to 520 s, under one device call's 600 s.
#
#   bash bench/gpu_check.sh                               # on the device machine (the `device` tool)
#   SEMFLOW_QUALITY=1 SEMFLOW_TEACHER=DIR bash bench/gpu_check.sh   # a second call: the quality presets
#
# The quality presets (issue 18 item 4: the Dolly comparison at GPU size, SE-DSI on Cranfield) have not
# run on a device yet. What they need there, beyond the wheels below: the real teacher (SmolLM2-135M-
# Instruct; its GGUF is 98 MB, over the 64 MiB a call can carry, so DIR must be a converted copy that
# is already on that machine), the pipeline's own packages (prefect, mlflow, gensim, rouge-score, bm25s,
# typer, rich: wheels, carried) and the data copied into an ignored folder of the checkout named
# shared/data. Without SEMFLOW_QUALITY they are skipped; their limits are a guess at a small size.
#
# The device image has torch, transformers (another version than ours) and triton, but no pydantic:
# carry wheels in .whl/ (ignored by git), downloaded here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl transformers==5.24.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection \
#     typing-extensions==4.16.0
# and name .whl in the tool's `carry`. Each part has its own time limit, so one failing part still
# leaves the others' figures.
set -u
OUT=${OUT:-/tmp/semflow-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$OUT/gpu.txt"

if [ -z "${SEMFLOW_QUALITY:-}" ]; then  # the speed parts; the quality presets are a call of their own
echo "== GPU tests (static and fused decoders: greedy equals generate, graph replays, seeded sampling)"
timeout 100 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/components/test_generation_static.py \
  tests/components/test_generation_fused.py 2>&1 | tail -n 15 | tee "$OUT/pytest.txt"

echo "== generation: plain, transformers' static cache, StaticDecoder, fused (eager, compiled); B64, 128 + 256"
timeout 240 python3 bench/bench_fast_generation.py --device cuda --dtype bfloat16 --shapes 135m 360m 1.7b \
  --engines plain hf_static static fused fused_compiled --agreement-engines static fused_compiled \
  --json "$OUT/generation.json" > "$OUT/generation.txt" 2>&1
tail -n 25 "$OUT/generation.txt"

echo "== training step (360M -> 135M, B16 x T1024) and SCRG (B64, 128 + 256)"
timeout 180 python3 bench/bench_distill.py --batch 16 --seq 1024 --chunk 2048 --steps 5 --device cuda \
  --dtype bfloat16 --teacher-shape 360m --student-shape 135m --student-layers 0 \
  --scrg-batch 64 --scrg-prompt 128 --scrg-new 256 --json "$OUT/distill.json" > "$OUT/distill.txt" 2>&1
tail -n 25 "$OUT/distill.txt"

fi

if [ -n "${SEMFLOW_QUALITY:-}" ] && [ -d "${SEMFLOW_TEACHER:-/nonexistent}" ] && [ -d shared/data ]; then
  echo "== quality presets: Dolly comparison (GPU size, 3 methods x 1 seed) and SE-DSI on Cranfield"
  timeout 300 python3 bench/bench_distill_compare.py --size gpu --data shared/data/dolly/dev.jsonl \
    --workdir /tmp/dolly-gpu --methods mgsr,seqkd,kd_fkl --seeds 0 --set "teacher.spec=$SEMFLOW_TEACHER" \
    --json "$OUT/dolly.json" > "$OUT/dolly.txt" 2>&1
  timeout 240 python3 bench/bench_sedsi_quality.py --data shared/data/cranfield --preset gpu --device cuda \
    --dtype bfloat16 --backbones teacher --teacher "$SEMFLOW_TEACHER" --seeds 0 --no-scorer-ablation \
    --json "$OUT/sedsi_quality.json" --markdown "$OUT/sedsi_quality.md" > "$OUT/sedsi.txt" 2>&1
else
  echo "quality presets skipped: needs SEMFLOW_QUALITY=1, SEMFLOW_TEACHER (a converted teacher there), shared/data" \
    | tee "$OUT/dolly.txt" "$OUT/sedsi.txt"
fi

echo
echo "================ summary ================"
cat "$OUT/gpu.txt"
grep -E "passed|failed|error" "$OUT/pytest.txt" 2>/dev/null | tail -n 1
sed -n '/^B64/,$p' "$OUT/generation.txt" 2>/dev/null
sed -n '/^B16 x T1024/,$p' "$OUT/distill.txt" 2>/dev/null
tail -n 22 "$OUT/dolly.txt"
tail -n 12 "$OUT/sedsi.txt"
