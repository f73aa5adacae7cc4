"""SE-DSI index training throughput (tokens/s of the shared Trainer on real rehearsal pairs).

    .venv/bin/python bench/bench_sedsi_train.py                                  # CPU: 135M shape, 4 layers
    python3 bench/bench_sedsi_train.py --device cuda --layers 0 --batch 32 --steps 20   # full 135M on a GPU

Pairs are what the sedsi_index stage trains on: the built-in Wikipedia documents (cut to
`--max-input` tokens), their leading rehearsal passages and sentences, each mapped to an identifier. The
identifiers here are the documents' titles (no ED generation, so only training is timed). The model is a
random-init Llama of the SmolLM2-135M shape (bench/_shapes.py) with the byte-level tokenizer of the tiny
models, so token counts are bytes: tokens/s compares runs of this script, not models.
Reports optimizer steps/s and trained tokens/s (all tokens of each batch, as the Trainer counts them),
the first step (allocator, warm-up) excluded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--layers", type=int, default=4, help="0: the shape's 30 layers")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-input", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from bench._shapes import llama
    from components.data import build_documents
    from components.training.trainer import Trainer
    from components.models.tiny import byte_tokenizer
    from components.sedsi import RehearsalSettings, build_pairs
    from components.sedsi.descriptions import Descriptions
    from components.sedsi.training import IdEncoder, index_loss_fn
    from semflow.config import BuiltinSource, TrainerConfig

    docs = build_documents(BuiltinSource(name="wiki", limit=args.docs))
    ids, texts, titles = docs["doc_id"].tolist(), docs["text"].tolist(), docs["title"].tolist()
    desc = Descriptions(doc_ids=ids, eds=titles, candidates=[[t] for t in titles], scores=[[0.0]] * len(ids),
                        train_queries=[[] for _ in ids], heldout=[[] for _ in ids])
    pairs = build_pairs(ids, texts, desc, RehearsalSettings())
    tok = byte_tokenizer()
    encoder = IdEncoder(tok, is_encoder_decoder=False, max_input_tokens=args.max_input)
    examples = [encoder.example(p) for p in pairs]
    model = llama("135m", args.layers or None, 0, args.device, "float32")
    model.resize_token_embeddings(len(tok))
    times: list[float] = []

    def on_log(step, metrics):
        times.append(time.perf_counter())

    cfg = TrainerConfig(lr=1e-4, batch_size=args.batch, max_steps=args.steps, checkpoint_every=10_000,
                        eval_every=10_000, warmup_ratio=0.0)
    with tempfile.TemporaryDirectory() as ckpt:
        trainer = Trainer(model, index_loss_fn(model, 0.1), examples, encoder.collate, cfg, ckpt, on_log=on_log,
                          progress=False)
        result = trainer.train()
    steady = result.history[1:]
    tps = sum(h["tokens_per_second"] for h in steady) / max(len(steady), 1)
    step_s = (times[-1] - times[0]) / max(len(times) - 1, 1)
    n_tokens = sum(len(e.input_ids) + len(e.ed_ids) for e in examples)
    print(f"{len(pairs)} pairs ({n_tokens} tokens) from {len(ids)} documents; 135M shape, "
          f"{args.layers or 30} layers, batch {args.batch}, {args.device}, torch {torch.__version__}")
    print(f"{'steps':>5} {'s/step':>8} {'tokens/s':>10}")
    print(f"{len(steady):>5} {step_s:8.3f} {tps:10.0f}")


if __name__ == "__main__":
    main()
