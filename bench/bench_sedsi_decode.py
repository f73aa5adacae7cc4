"""SE-DSI constrained decoding: our trie beam search vs generate + TrieLogitsProcessor vs prefix_allowed_tokens_fn.

    .venv/bin/python bench/bench_sedsi_decode.py                          # CPU, hidden 128, 4 layers
    .venv/bin/python bench/bench_sedsi_decode.py --shapes 128x4 576x4 --repeats 2   # and a bigger model
    .venv/bin/python bench/bench_sedsi_decode.py --device cuda --smollm2 --dtype bfloat16 --batch-size 32

All three paths run the same random-init Llama (vocabulary 49152 as SmolLM2, so every step works on
full-size score rows), the same ~1000 synthetic EDs of 8-16 tokens with shared prefixes (a few
question openings, then topics, then free tokens) and the same queries, batched alike:

- trie: `constrained_search(engine="trie")`, our exact beam search over trie children (`trie_beam_search`);
- generate: `constrained_search(engine="generate")`, `model.generate` + the vectorised `TrieLogitsProcessor`;
- dict fn: `reference_search`, `model.generate` + `prefix_allowed_tokens_fn` over a dict trie (the baseline).

Reported per model shape and beam width: seconds and queries/s end to end, the speed-up over the
baseline, and how many queries get the baseline's exact ranked ED list and its top-1. The generate
paths use `--early-stopping` (default true, transformers' default); the trie engine is always the
exact beam search (early_stopping="never"), so with true its lower ranks may legitimately differ.
`--processor-micro` adds the cost of one processor call on a batch of beams at several trie depths.

Measured (2026-11, 2 shared CPU cores, best of 3, queries/s trie / generate / dict fn): hidden 128 x 4
layers: beam 10 26.8 / 14.5 / 11.0 (2.4x), beam 20 14.7 / 7.2 / 5.8 (2.5x); hidden 576 x 4: beam 10
7.7 / 4.2 / 3.8 (2.0x), beam 20 4.6 / 2.0 / 1.8 (2.5x); identical rankings. The trie engine's time is
then almost all the model's forward over the live beams, its lm_head and logsumexp over 49k tokens
above all, which an exact search cannot skip.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: components/ and bench/

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor  # noqa: E402

from components.models.tiny import byte_tokenizer  # noqa: E402
from bench.bench_sedsi_reference import build_dict_trie, prefix_allowed_tokens_fn_for, reference_search  # noqa: E402
from components.sedsi.retrieve import TrieLogitsProcessor, constrained_search  # noqa: E402
from components.sedsi.trie import IdTrie  # noqa: E402

WORDS = ("what how why who when which does is can the of a in for to and river city protein market song war "
         "theory model energy law island battle species language planet engine").split()


def synthetic_eds(n: int, vocab: int, rng: random.Random, min_len: int = 8, max_len: int = 16) -> list[list[int]]:
    """EDs sharing prefixes like generated queries do: opening (1-2 tokens) + topic (1-3) + free tokens."""
    def tokens(k: int) -> list[int]:
        return [rng.randrange(3, vocab) for _ in range(k)]

    openings = [tokens(rng.randint(1, 2)) for _ in range(24)]
    weights = [1.0 / (i + 1) for i in range(len(openings))]  # Zipf-like: a few openings dominate
    topics = [tokens(rng.randint(1, 3)) for _ in range(max(n // 5, 1))]
    eds, seen = [], set()
    while len(eds) < n:
        head = rng.choices(openings, weights)[0] + rng.choice(topics)
        ed = (head + tokens(max_len))[: rng.randint(min_len, max_len)]
        if tuple(ed) not in seen:
            seen.add(tuple(ed))
            eds.append(ed)
    return eds


def synthetic_queries(n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "?" for _ in range(n)]


def build_model(args, eos_id: int, pad_id: int, bos_id: int) -> LlamaForCausalLM:
    if args.smollm2:  # SmolLM2-135M's shape
        args.hidden, args.layers, heads, kv_heads, intermediate = 576, 30, 9, 3, 1536
    else:
        heads, kv_heads, intermediate = max(args.hidden // 32, 1), max(args.hidden // 64, 1), 2 * args.hidden
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=intermediate,
        num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=512, initializer_range=0.3,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = LlamaForCausalLM(config)
    return model.to(device=args.device, dtype=getattr(torch, args.dtype)).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def processor_micro(trie: IdTrie, dict_trie: dict, eds: list[list[int]], rows: int, num_beams: int, vocab: int,
                    device: str, rng: random.Random, repeats: int) -> list[tuple[int, float, float, bool]]:
    """ms per call of each processor on `rows` beams at trie depth d (beams on random ED prefixes)."""
    out = []
    prompt = 24
    for depth in (0, 2, 6, 12):
        prefixes = [rng.choice([e for e in eds if len(e) >= depth] or eds)[:depth] for _ in range(rows)]
        ids = torch.tensor([[5] * prompt + p for p in prefixes], device=device)
        scores = torch.randn(rows, vocab, device=device).log_softmax(-1)
        ours = TrieLogitsProcessor(trie, prompt, pad_token_id=0)
        ref = PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn_for(dict_trie, prompt, trie.eos_id, 0),
                                               num_beams)
        same = torch.equal(ours(ids, scores.clone()), ref(ids, scores.clone()))
        times = []
        for proc in (ours, ref):
            proc(ids, scores.clone())
            sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                proc(ids, scores)
            sync(device)
            times.append((time.perf_counter() - start) / repeats * 1000)
        out.append((depth, times[0], times[1], same))
    return out


PATHS = ("trie", "generate", "dict fn")


def parse_shape(text: str) -> tuple[int, int]:
    hidden, _, layers = text.lower().partition("x")
    return int(hidden), int(layers)


def run_shape(args, tokenizer, trie: IdTrie, dict_trie: dict, queries: list[str]) -> list[tuple]:
    """Time the three paths (interleaved, best of `repeats`) at every beam width on the current model shape."""
    eos_id = trie.eos_id
    model = build_model(args, eos_id, tokenizer.pad_token_id, tokenizer.bos_token_id)
    common = dict(batch_size=args.batch_size)
    early = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    runs = {
        "trie": lambda beams: constrained_search(model, tokenizer, queries, trie, num_beams=beams, engine="trie",
                                                 **common),
        "generate": lambda beams: constrained_search(model, tokenizer, queries, trie, num_beams=beams,
                                                     engine="generate", early_stopping=early, **common),
        "dict fn": lambda beams: reference_search(model, tokenizer, queries, dict_trie, eos_id, num_beams=beams,
                                                  early_stopping=early, **common),
    }
    warm = queries[:2]
    constrained_search(model, tokenizer, warm, trie, num_beams=4, engine="trie", **common)
    constrained_search(model, tokenizer, warm, trie, num_beams=4, engine="generate", **common)
    reference_search(model, tokenizer, warm, dict_trie, eos_id, num_beams=4, **common)

    rows = []
    for beams in args.beams:
        best = dict.fromkeys(PATHS, math.inf)
        ranked = {}
        for _ in range(args.repeats):  # interleaved, best of: the CPU may be shared with other work
            for path in PATHS:
                sync(args.device)
                start = time.perf_counter()
                out = runs[path](beams)
                sync(args.device)
                best[path] = min(best[path], time.perf_counter() - start)
                ranked[path] = [[s for s, _ in hits] for hits in out] if path != "dict fn" else out
        ref = ranked["dict fn"]
        for path in PATHS:
            got = ranked[path]
            same = sum(g == r for g, r in zip(got, ref, strict=True))
            top1 = sum(bool(g) and bool(r) and g[0] == r[0] for g, r in zip(got, ref, strict=True))
            valid = all(trie.contains(s) for hits in got for s in hits)
            hits = sum(len(g) for g in got) / len(got)
            rows.append((beams, path, best[path], best["dict fn"] / best[path], same, top1, hits, valid))
    del model
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=None, metavar="HIDDENxLAYERS",
                        help="model shapes to run one after the other, e.g. 128x4 576x4 (default: --hidden x --layers)")
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M's shape (576 x 30 layers); for a GPU")
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--eds", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--beams", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--early-stopping", choices=["true", "false", "never"], default="true",
                        help="early_stopping of the two generate-based paths (the trie engine is always exact)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per path, interleaved; best is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--processor-micro", action="store_true", help="also time one processor call per depth")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shapes or [(args.hidden, args.layers)]
    if args.smollm2:
        shapes = [(576, 30)]

    rng = random.Random(args.seed)
    tokenizer = byte_tokenizer()
    eos_id = tokenizer.eos_token_id
    eds = synthetic_eds(args.eds, args.vocab, rng)
    start = time.perf_counter()
    trie = IdTrie.build(eds, eos_id)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    dict_trie = build_dict_trie(eds, eos_id)
    dict_s = time.perf_counter() - start
    queries = synthetic_queries(args.queries, rng)
    prompt_tokens = sum(len(ids) for ids in tokenizer(queries, add_special_tokens=False)["input_ids"])
    print(f"trie: {trie} built in {build_s * 1000:.1f} ms (dict trie "
          f"{dict_s * 1000:.1f} ms); root has {int(trie.offsets[1] - trie.offsets[0])} children")
    print(f"queries: {len(queries)} ({prompt_tokens} prompt tokens), batch size {args.batch_size}, "
          f"{args.device}/{args.dtype}, torch threads {torch.get_num_threads()}, best of {args.repeats}; "
          f"generate paths early_stopping={args.early_stopping}, trie engine exact")
    print("paths: trie = constrained_search(engine='trie'), generate = constrained_search(engine='generate') "
          "(generate + TrieLogitsProcessor), dict fn = reference_search (generate + prefix_allowed_tokens_fn)")

    n = len(queries)
    for hidden, layers in shapes:
        args.hidden, args.layers = hidden, layers
        rows = run_shape(args, tokenizer, trie, dict_trie, queries)
        print(f"\nmodel: random Llama hidden {hidden}, {layers} layers, vocab {args.vocab}")
        print(f"{'beams':>5} {'path':>9} {'s':>7} {'q/s':>7} {'vs dict fn':>10} {'same ranking':>12} "
              f"{'same top-1':>10} {'hits/q':>6} {'all valid':>9}")
        for beams, path, secs, ratio, same, top1, hits, valid in rows:
            print(f"{beams:>5} {path:>9} {secs:>7.2f} {n / secs:>7.2f} {ratio:>9.2f}x {f'{same}/{n}':>12} "
                  f"{f'{top1}/{n}':>10} {hits:>6.1f} {str(valid):>9}")

    if args.processor_micro:
        print(f"\none processor call, ms (batch {args.batch_size} x beams; depth = generated tokens so far)")
        print(f"{'beams':>5} {'rows':>5} {'depth':>5} {'vectorised':>10} {'dict fn':>8} {'ratio':>6} {'same':>5}")
        for beams in args.beams:
            n_rows = args.batch_size * beams
            repeats = 3 if args.device == "cpu" else 10
            for depth, ours_ms, ref_ms, same in processor_micro(trie, dict_trie, eds, n_rows, beams, args.vocab,
                                                                args.device, rng, repeats):
                print(f"{beams:>5} {n_rows:>5} {depth:>5} {ours_ms:>10.2f} {ref_ms:>8.2f} "
                      f"{ref_ms / ours_ms:>5.1f}x {str(same):>5}")


if __name__ == "__main__":
    main()
