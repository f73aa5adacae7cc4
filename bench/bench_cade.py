"""CADE slice training (frozen context) vs plain gensim Word2Vec: words/s side by side in one run.

    .venv/bin/python bench/bench_cade.py                      # CBOW and SG on 3 corpora, 3 rounds
    .venv/bin/python bench/bench_cade.py --rounds 1 --sg 0    # quicker
    .venv/bin/python bench/bench_cade.py --json out/bench_cade.json --align
    .venv/bin/python bench/bench_cade.py --stage             # only the cade_align stage's cost (see --stage)

Both sides train on the same token lists with the same settings (CADE defaults: vector_size 100,
window 5, negative 10, sample 1e-3, 5 epochs, workers 2). "Word2Vec" is the ``train`` call of a
Word2Vec whose vocabulary is already built; it is then the compass, and "slice" is
``components.cade.slices.train_vectors`` on the same corpus against that compass's frozen syn1neg.
words/s = raw tokens read over all epochs / seconds, as gensim reports it. Each round measures both
back to back; the table shows medians over rounds and the median of the per-round ratios.

Corpora (gensim's bundled test data, repeated so that one measurement takes a few seconds):
``lee-docs`` one unit per Lee article line (the pipeline's default, ~200 words each);
``lee-sentences`` the same text split into sentences (~22 words each: one kernel call, so one GIL
round trip, per 22 words); ``text8-head`` head500.noblanks.cor (250 lines of ~1,300 words).
``--align`` also times the whole ``align`` on the default preset's corpora (Lee news vs Wikipedia).
``--stage`` times the cade_align stage's whole analysis (components.cade.report.align_and_report: the
alignment, every shift table, the self-check, likelihood, plots) on the default preset's slices, with
the current `cade:` defaults (the context measure, no replicates), with the split_half measure and the
replicates it needs (its defaults until 2026-12-07), and with CADE's fixed epochs, no replicates and the
cosine, side by side: news (all Lee articles), encyclopedia (all Wikipedia articles) and four generated
slices of the default run's size (33 test prompts x 64 words) cut from Lee text as stand-ins.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from gensim.models import Word2Vec
from gensim.test.utils import datapath

from components.cade.settings import CadeSettings
from components.cade.slices import frozen_context, train_vectors
from components.cade.text import sentences_from_texts

# Repeats per corpus for (CBOW, SG): skip-gram is ~4x slower per word.
CORPORA = {
    "lee-docs": ("lee_background.cor", False, (10, 3)),
    "lee-sentences": ("lee_background.cor", True, (10, 3)),
    "text8-head": ("head500.noblanks.cor", False, (2, 1)),
}


def _cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, of this process); machine = nan off Linux."""
    ours = sum(os.times()[:2])
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:8]]
    except OSError:
        return float("nan"), ours
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), ours


def load(name: str, sg: int) -> list[list[str]]:
    filename, split, repeats = CORPORA[name]
    with open(datapath(filename), encoding="utf-8") as handle:
        units = sentences_from_texts(handle.read().splitlines(), split=split)
    return units * repeats[sg]


def measure(corpus: list[list[str]], settings: CadeSettings) -> tuple[float, float]:
    """(Word2Vec words/s, slice words/s): Word2Vec trains first and becomes the slice's compass."""
    model = Word2Vec(**settings.word2vec_kwargs(epochs=settings.slice_epochs))
    model.build_vocab(corpus)
    start = time.perf_counter()
    _, raw = model.train(corpus, total_examples=model.corpus_count, epochs=settings.slice_epochs)
    word2vec = raw / (time.perf_counter() - start)
    _, _, stats = train_vectors(model, frozen_context(model), "bench", corpus, settings, epochs=settings.slice_epochs)
    return word2vec, stats.words_per_second


def align_default(settings: CadeSettings) -> dict:
    from components.cade.alignment import align
    from components.data.builtin import builtin_texts

    start = time.perf_counter()
    slices = {
        "news": sentences_from_texts(builtin_texts("lee")),
        "encyclopedia": sentences_from_texts(builtin_texts("wiki")),
    }
    read = time.perf_counter() - start
    start = time.perf_counter()
    alignment = align(slices, settings)
    wall = time.perf_counter() - start
    return {"read_seconds": read, "align_seconds": wall, "tokens": alignment.tokens,
            "stats": {name: s.to_dict() for name, s in alignment.stats.items()}}


def stage_cost(overrides: dict) -> dict:
    """Wall and CPU seconds of align_and_report on the default preset's slices (see the docstring)."""
    import tempfile

    from components.cade.report import align_and_report
    from components.data.builtin import builtin_texts
    from semflow.config import CadeConfig

    lee = builtin_texts("lee")
    words = " ".join(lee).split()
    generated = {name: [" ".join(words[(i * 14 + j) * 64 : (i * 14 + j + 1) * 64]) for j in range(14)]
                 for i, name in enumerate(("references", "teacher", "student_before", "student_after"))}
    texts = {"news": lee, "encyclopedia": builtin_texts("wiki")} | generated
    cpu, wall = sum(os.times()[:2]), time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        report = align_and_report(texts, CadeConfig(**overrides), Path(out))
    return {"overrides": overrides, "wall_s": time.perf_counter() - wall, "cpu_s": sum(os.times()[:2]) - cpu,
            "epochs": {n: s.epochs for n, s in report.alignment.stats.items()},
            "self_check": {k: v for k, v in report.metrics.items() if k.startswith("self_check")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sg", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--align", action="store_true", help="also time align() on the default corpora")
    parser.add_argument("--stage", action="store_true", help="only time the cade_align stage's analysis")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.stage:
        runs = [stage_cost({}), stage_cost({"shift_measure": "split_half", "replicates": 4, "null_replicates": 2}),
                stage_cost({"epoch_words": 0, "compass_epochs": 5, "self_check": False, "shift_measure": "cosine"})]
        for run in runs:
            print(f"cade_align analysis {run['overrides'] or 'defaults'}: {run['wall_s']:.1f} s wall, "
                  f"{run['cpu_s']:.1f} s CPU; epochs {run['epochs']}; {run['self_check']}")
        if args.json:
            args.json.write_text(json.dumps(runs, indent=2) + "\n")
        return

    settings = {sg: CadeSettings(sg=sg, workers=args.workers) for sg in (0, 1)}
    # Other processes on the machine skew both sides unevenly (the slice side scales worse under
    # contention): the CPU time they used during the run is printed so a busy run can be recognised.
    machine_before, ours_before = _cpu_seconds()
    started = time.perf_counter()
    rows = []
    for name in args.corpora:
        for sg in args.sg:
            corpus = load(name, sg)
            words = sum(map(len, corpus))
            rounds = [measure(corpus, settings[sg]) for _ in range(args.rounds)]
            w2v = statistics.median(r[0] for r in rounds)
            cade = statistics.median(r[1] for r in rounds)
            ratio = statistics.median(r[1] / r[0] for r in rounds)
            rows.append({"corpus": name, "model": "SG" if sg else "CBOW", "words_per_epoch": words,
                         "units": len(corpus), "word2vec_wps": w2v, "slice_wps": cade, "ratio": ratio,
                         "ratios": [r[1] / r[0] for r in rounds]})
            print(f"  {name:14s} {rows[-1]['model']:4s} done", flush=True)

    machine_after, ours_after = _cpu_seconds()
    wall = time.perf_counter() - started
    others = max(0.0, (machine_after - machine_before) - (ours_after - ours_before))
    print(f"\nslice training (frozen syn1neg) vs gensim Word2Vec, workers={args.workers}, "
          f"{args.rounds} round(s), CADE defaults, {os.cpu_count()} CPUs {platform.machine()}; "
          f"other processes used {others:.1f} CPU-s in {wall:.0f} s ({others / wall:.0%} of one core)")
    print(f"{'corpus':14s} {'model':5s} {'words/epoch':>11s} {'words/unit':>10s} {'Word2Vec w/s':>13s} "
          f"{'slice w/s':>11s} {'ratio':>6s}  per round")
    for r in rows:
        per_unit = r["words_per_epoch"] / r["units"]
        print(f"{r['corpus']:14s} {r['model']:5s} {r['words_per_epoch']:11,d} {per_unit:10.0f} "
              f"{r['word2vec_wps']:13,.0f} {r['slice_wps']:11,.0f} {r['ratio']:5.2f}x  "
              + " ".join(f"{x:.2f}" for x in r["ratios"]))
    result = {"settings": settings[0].to_dict() | {"sg": args.sg}, "rounds": args.rounds, "rows": rows,
              "cpus": os.cpu_count(), "wall_seconds": wall, "other_cpu_seconds": others}
    if args.align:
        result["align_default"] = align_default(CadeSettings(workers=args.workers))
        a = result["align_default"]
        print(f"\nalign() on the default corpora (news {a['tokens']['news']:,} + encyclopedia "
              f"{a['tokens']['encyclopedia']:,} tokens): {a['align_seconds']:.1f} s "
              f"(+ {a['read_seconds']:.1f} s reading and tokenising)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
