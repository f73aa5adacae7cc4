"""Planted-shift benchmark for CADE's shift rankings on real text (issue 16).

    .venv/bin/python bench/bench_cade_shift.py                                  # lee, wiki, text8; k 4, 8; seeds 0-2
    .venv/bin/python bench/bench_cade_shift.py --corpora lee --k 8 --seeds 0    # one quick run
    .venv/bin/python bench/bench_cade_shift.py --corpus my_texts.txt            # your corpus (see --corpus)
    .venv/bin/python bench/bench_cade_shift.py --markdown bench/results/cade.md --json /tmp/cade_shift.json
    .venv/bin/python bench/bench_cade_shift.py --set epoch_words=1000000 --set replicates=2   # other settings

What it does, per corpus and seed:

1. The corpus (Lee news, the Wikipedia sample and the text8 head shipped in gensim's wheel, read as
   components.data.builtin reads them; or ``--corpus``) is tokenised (components.cade.text), cut into
   units of at most ``--unit-tokens`` tokens, capped at ``--tokens-per-half`` x 2 tokens, and its units
   are split into two random halves (seeded).
2. ``k`` pairs of words of matched frequency (>= ``--min-count`` in both halves, counts within 1.25x,
   stopwords excluded) are swapped everywhere in the second half (components.cade.selfcheck): the 2k
   swapped words changed meaning, every other word did not. ``k = 0`` is the null run: nothing swapped.
3. Three trainings on the same halves:
   - ``cade``: CADE as published (Bianchi et al. 2020, arXiv 2004.06519): 5 compass and 5 slice epochs,
     ranked by cosine;
   - ``default``: the pipeline's current defaults (epochs scaled to text size) plus 4 split-half and 2
     quarter replicates (``SPLIT_HALF``; the pipeline trains them only for the split_half measure),
     ranked by every candidate measure: ``context`` (the shipped default: the permutation test of each
     word's mean context over the texts, components.cade.contexts, left and right windows apart) and
     ``context_window`` (one window mean), both reading only the texts and the compass; ``cosine``,
     ``centred`` (mean-centred vectors), ``local``
     (Hamilton et al. 2016's local neighbourhood, k = 25), ``anchors`` (second-order profiles against
     the compared words), ``freq_z`` (cosine standardised among the 50 words of nearest frequency),
     ``split_half`` (cosine distance across slices over distance between halves of a slice; q from the
     quarter replicates' pseudo pairs), ``split_half_efron`` and ``split_half_freqnull`` (the same
     ranking, q from the empirical null of all compared words, or per frequency stratum of 100 words),
     ``split_half_local`` (the same ratio with the local-neighbourhood distance) and ``split_half_full``
     (the full-slice vectors' distance over split-half's within-slice distance; no q) and
     ``split_half_context`` (the same ratio with the Jensen-Shannon divergence between the context
     distributions each vector predicts through the frozen compass context matrix; no q);
   - ``count/ppmi_split_half``: no embedding at all, the split-half ratio on each word's PPMI context row
     (a count-based control: what the raw co-occurrences of the halves can tell);
   - ``unaligned``: two independent gensim Word2Vec models with the same settings and epochs, ranked by
     cosine (the control: no compass) and by ``local`` (which needs no alignment).
4. Over the words with count >= min-count in both halves (stopwords excluded), per ranking:
   precision@2k (share of planted words among the first 2k), MRR (mean over planted words of
   1 / (1 + the number of unplanted words ranked above it): 1.0 when they fill the top), and for the
   rankings with a significance figure, how many planted words and how many other words get q < 0.05.
   The null run reports its top words with their z and q. Each planted run's JSON record also holds
   ``pair_diagnostics``: per planted pair, the centred cosine of its two words in the first half, the
   p of the context test of one word's contexts against the other's in that half (``pair_p``: how well
   the unswapped text tells them apart) and the ranks split_half and context give them (which swaps are
   missed, and whether those pairs were used alike).

Times: wall and CPU seconds (user + sys of this process) per training, side by side in one run;
``default_without_replicates`` is the compass and the two slice models of the default training (what
the context measure needs), ``context_test`` the two context rankings themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import zlib
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
from gensim.models import Word2Vec
from gensim.parsing.preprocessing import STOPWORDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.cade import CadeSettings, align, matched_pairs, swap_words  # noqa: E402
from components.cade.alignment import Alignment  # noqa: E402
from components.cade.contexts import occurrences, permutation_p, text_sums  # noqa: E402
from components.cade.shift import (  # noqa: E402
    eligible_words,
    pair_distance,
    shift_scores,
    significance,
    split_half_distances,
)
from components.cade.text import sentences_from_texts  # noqa: E402
from components.data.builtin import builtin_texts  # noqa: E402

BUILTIN = ("lee", "wiki", "text8")
FDR = 0.05
# The default training keeps the replicates the split_half ranking needs (the pipeline's defaults no
# longer train them: its default measure, context, reads the texts instead), so both are compared on
# the same models; --set replicates=... overrides.
SPLIT_HALF = {"replicates": 4, "null_replicates": 2}


def read_corpus(name: str) -> list[str]:
    """Texts of a builtin corpus, or of a file: .txt (one text per line), .parquet/.csv/.jsonl (a
    ``text`` column)."""
    if name in BUILTIN:
        return builtin_texts(name)
    path = Path(name)
    if not path.is_file():
        sys.exit(f"error: --corpus {name}: no such file")
    if path.suffix == ".txt":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    import pandas as pd

    readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True)}
    if path.suffix not in readers:
        sys.exit(f"error: --corpus {name}: expected .txt, .parquet, .csv or .jsonl")
    frame = readers[path.suffix](path)
    if "text" not in frame:
        sys.exit(f"error: --corpus {name}: no 'text' column (columns: {', '.join(map(str, frame.columns))})")
    return frame["text"].dropna().astype(str).tolist()


def units(texts: list[str], unit_tokens: int, max_tokens: int) -> list[list[str]]:
    out, total = [], 0
    for tokens in sentences_from_texts(texts):
        for start in range(0, len(tokens), unit_tokens):
            if total >= max_tokens:
                return out
            piece = tokens[start : start + unit_tokens]
            out.append(piece)
            total += len(piece)
    return out


def halves(pieces: list[list[str]], seed: int, how: str) -> tuple[list[list[str]], list[list[str]]]:
    """``random``: a seeded random half of the units, and the rest; ``alternate``: even and odd units."""
    if how == "alternate":
        return pieces[0::2], pieces[1::2]
    chosen = np.zeros(len(pieces), dtype=bool)
    chosen[np.random.default_rng([seed, 20261201]).permutation(len(pieces))[: len(pieces) // 2]] = True
    return [p for p, c in zip(pieces, chosen) if c], [p for p, c in zip(pieces, chosen) if not c]


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def timed(fn):
    wall, c = time.perf_counter(), cpu()
    out = fn()
    return out, {"wall_s": time.perf_counter() - wall, "cpu_s": cpu() - c}


def evaluate(words: list[str], score: np.ndarray, planted: set[str], q: np.ndarray | None) -> dict:
    """p@2k, MRR (filtered), and with q: planted / other words significant (q < FDR)."""
    order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
    ranked = [words[i] for i in order]
    out: dict = {"words": len(words)}
    if planted:
        top = ranked[: len(planted)]
        out["p_at_2k"] = len(set(top) & planted) / len(planted)
        reciprocal, above = [], 0
        for w in ranked:
            if w in planted:
                reciprocal.append(1.0 / (1 + above))
            else:
                above += 1
        out["mrr"] = float(np.mean(reciprocal))
        out["planted_ranks"] = {w: i for i, w in enumerate(ranked) if w in planted}  # 0 = most shifted
    if q is not None:
        significant = {words[i] for i in np.flatnonzero(q < FDR)}
        out["planted_significant"] = len(significant & planted) / len(planted) if planted else None
        out["other_significant"] = len(significant - planted)
    out["top"] = [(ranked[i], float(score[order[i]]), None if q is None else float(q[order[i]])) for i in range(5)]
    return out


def frequency_z(score: np.ndarray, counts: np.ndarray, window: int = 50) -> np.ndarray:
    """A frequency-aware score: each word's score standardised (median, MAD) among the ``window`` words
    of nearest count (the candidate "shift relative to words of similar frequency")."""
    order = np.argsort(counts, kind="stable")
    out = np.empty(len(score))
    for pos, i in enumerate(order):
        lo = max(0, min(pos - window // 2, len(order) - window))
        group = score[order[lo : lo + window]]
        centre = np.median(group)
        out[i] = (score[i] - centre) / (1.4826 * np.median(np.abs(group - centre)) + 1e-12)
    return out


def rankings(alignment: Alignment, planted: set[str], min_count: int) -> dict[str, dict]:
    """Every candidate measure on one alignment of slices "a" and "b"."""
    out = {}
    base = shift_scores(alignment, "a", "b", min_count, "cosine", STOPWORDS)
    words = base["word"].tolist()
    counts = np.minimum(base["count_a"].to_numpy(), base["count_b"].to_numpy())
    out["cosine"] = evaluate(words, base["shift"].to_numpy(), planted, base["q"].to_numpy())
    for distance in ("centred", "local", "anchors"):
        frame = shift_scores(alignment, "a", "b", min_count, "cosine", STOPWORDS, distance=distance)
        out[distance] = evaluate(frame["word"].tolist(), frame["shift"].to_numpy(), planted, frame["q"].to_numpy())
    out["freq_z"] = evaluate(words, frequency_z(base["shift"].to_numpy(), counts), planted, None)
    if alignment.replicates.get("a") and alignment.replicates.get("b"):
        frame = shift_scores(alignment, "a", "b", min_count, "split_half", STOPWORDS)
        words, shift = frame["word"].tolist(), frame["shift"].to_numpy()
        out["split_half"] = evaluate(words, shift, planted, frame["q"].to_numpy())
        # the same ranking with the empirical nulls instead of the quarters'
        out["split_half_efron"] = evaluate(words, shift, planted, significance(shift)[1])
        stratified = significance(shift, np.minimum(frame["count_a"], frame["count_b"]).to_numpy(), window=100)
        out["split_half_freqnull"] = evaluate(words, shift, planted, stratified[1])
        local = shift_scores(alignment, "a", "b", min_count, "split_half", STOPWORDS, distance="local")
        out["split_half_local"] = evaluate(local["word"].tolist(), local["shift"].to_numpy(), planted, local["q"].to_numpy())
        out["split_half_full"] = evaluate(words, full_over_within(alignment, words), planted, None)
        out["split_half_context"] = evaluate(words, context_ratio(alignment, words), planted, None)
    return out


def context_rankings(alignment: Alignment, planted: set[str], min_count: int, permutations: int) -> dict[str, dict]:
    """The context test (components.cade.contexts) with both layouts: ``context`` (left and right
    windows apart, the default) and ``context_window`` (one window mean, the plain linearised vector).
    Ranked as the shift table ranks them: by z (the frame's order), ties by shift."""
    out = {}
    for name, layout in (("context", "sides"), ("context_window", "window")):
        frame = shift_scores(alignment, "a", "b", min_count, "context", STOPWORDS, context_layout=layout,
                             permutations=permutations)
        out[name] = evaluate(frame["word"].tolist(), frame["z"].to_numpy(), planted, frame["q"].to_numpy())
    return out


def _predictions(alignment: Alignment, kv, words: list[str]) -> np.ndarray:
    """Per word, the context distribution its vector predicts through the frozen compass context matrix:
    softmax(U v + log q) over the compass vocabulary (components.cade.likelihood's normalisation)."""
    log_q = np.log(alignment.noise_distribution())
    rows = np.stack([kv[w] if w in kv.key_to_index else np.full(kv.vector_size, np.nan) for w in words]).astype(np.float64)
    logits = rows @ alignment.context.astype(np.float64).T + log_q
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence (nats); NaN where a row is missing."""
    m = (p + q) / 2

    def kl(x: np.ndarray) -> np.ndarray:
        return np.nansum(np.where(x > 0, x * np.log(x / m), 0.0), axis=1)

    with np.errstate(divide="ignore", invalid="ignore"):
        out = (kl(p) + kl(q)) / 2
    return np.where(np.isnan(p).any(1) | np.isnan(q).any(1), np.nan, out)


def context_ratio(alignment: Alignment, words: list[str]) -> np.ndarray:
    """split_half with the Jensen-Shannon divergence between the context distributions the two vectors
    predict (the compass's shared, frozen context matrix makes those distributions comparable)."""
    def divergence(kv_x, kv_y, w):
        return _js(_predictions(alignment, kv_x, w), _predictions(alignment, kv_y, w))

    cross, within, _ = split_half_distances(alignment, "a", "b", words, divergence)
    return cross / within


def full_over_within(alignment: Alignment, words: list[str]) -> np.ndarray:
    """A split_half variant: the cosine distance of the two *full-slice* vectors (trained on twice the
    text of a half, so less noisy than the half-vs-half distances split_half averages) over split_half's
    own denominator (the mean distance between the halves of one slice). If a vector's noise shrinks alike
    for every word as its text doubles, unchanged words share about one ratio whatever their frequency."""
    _, within, _ = split_half_distances(alignment, "a", "b", words)
    return pair_distance(alignment.vectors("a"), alignment.vectors("b"), words) / within


def _ppmi(sentences: list[list[str]], targets: dict[str, int], contexts: dict[str, int], window: int):
    """Rows of ``targets`` in a PPMI matrix over ``contexts`` (window ``window`` each side, the context
    distribution smoothed by ** 0.75, Levy, Goldberg and Dagan 2015), as a dense float64 array."""
    from scipy.sparse import coo_matrix

    rows, cols = [], []
    for s in sentences:
        t = np.fromiter((targets.get(w, -1) for w in s), dtype=np.int64, count=len(s))
        c = np.fromiter((contexts.get(w, -1) for w in s), dtype=np.int64, count=len(s))
        for off in range(1, window + 1):
            for x, y in ((t[:-off], c[off:]), (t[off:], c[:-off])):
                ok = (x >= 0) & (y >= 0)
                rows.append(x[ok])
                cols.append(y[ok])
    r, c = np.concatenate(rows), np.concatenate(cols)
    counts = coo_matrix((np.ones(len(r)), (r, c)), shape=(len(targets), len(contexts))).toarray()
    col = counts.sum(0) ** 0.75
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * col.sum() / (counts.sum(1, keepdims=True) * col[None, :]))
    return np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)


def _row_cosine_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
    return 1.0 - np.einsum("ij,ij->i", x, y) / norms


def ppmi_split_half(first: list[list[str]], second: list[list[str]], words: list[str], seed: int, replicates: int = 4,
                    window: int = 5) -> np.ndarray:
    """A count-based control, no embedding: split_half's ratio on PPMI context rows (each half's units
    split at random into two, ``replicates`` times)."""
    targets = {w: i for i, w in enumerate(words)}
    total = Counter(w for s in first + second for w in s)
    contexts = {w: i for i, w in enumerate(w for w, n in total.items() if n >= 5)}
    rng = np.random.default_rng([seed, 7])
    cross, within = np.zeros(len(words)), np.zeros(len(words))
    for _ in range(replicates):
        parts = []
        for half in (first, second):
            mask = np.zeros(len(half), dtype=bool)
            mask[rng.permutation(len(half))[: len(half) // 2]] = True
            parts.append([_ppmi([s for s, m in zip(half, mask) if m], targets, contexts, window),
                          _ppmi([s for s, m in zip(half, mask) if not m], targets, contexts, window)])
        (a1, a2), (b1, b2) = parts
        within += (_row_cosine_distance(a1, a2) + _row_cosine_distance(b1, b2)) / 2
        cross += sum(_row_cosine_distance(x, y) for x in (a1, a2) for y in (b1, b2)) / 4
    return cross / np.maximum(within, 1e-12)


def centred_similarity(kv, words: list[str], x: str, y: str) -> float:
    """Cosine of words x and y in one model after subtracting the mean vector of ``words`` (raw CBOW
    vectors of one slice are nearly all alike): how alike a planted pair was used before the swap."""
    centre = np.mean([kv[w] for w in words], axis=0)
    u, v = kv[x] - centre, kv[y] - centre
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def pair_distinguishability(alignment: Alignment, x: str, y: str, permutations: int = 1000) -> float:
    """How well the unswapped half tells the two words of a planted pair apart by their contexts: the
    context test (components.cade.contexts, sides layout) of x's occurrences against y's in slice "a",
    each word's occurrences grouped by text. A large p means the two were used alike there, so swapping
    them planted a shift that little can see."""
    occ = occurrences(alignment.texts["a"], [x, y], alignment.compass.key_to_index, alignment.context,
                      alignment.settings.window)
    (sums,) = text_sums([occ], "sides", 2)
    joined = np.concatenate([sums.sums[0], sums.sums[1]])
    counts = np.concatenate([sums.counts[0], sums.counts[1]])
    rng = np.random.default_rng([zlib.crc32(x.encode()), zlib.crc32(y.encode())])
    return permutation_p(joined, counts, len(sums.counts[0]), permutations, rng)[1]


def unaligned(a: list[list[str]], b: list[list[str]], settings: CadeSettings, planted: set[str], min_count: int) -> dict:
    """Two independent Word2Vec models (no compass), epochs as the default's slices."""
    models = []
    for sentences, seed in ((a, settings.seed + 11), (b, settings.seed + 12)):
        epochs = settings.epochs(sum(map(len, sentences)), settings.slice_epochs)
        kwargs = settings.word2vec_kwargs(epochs=epochs) | {"seed": seed}
        models.append(Word2Vec(sentences, **kwargs))
    counts_a, counts_b = Counter(w for s in a for w in s), Counter(w for s in b for w in s)
    words = [w for w in models[0].wv.index_to_key if w in models[1].wv.key_to_index and w not in STOPWORDS
             and counts_a[w] >= min_count and counts_b[w] >= min_count]
    out = {}
    for distance in ("cosine", "local"):
        score = pair_distance(models[0].wv, models[1].wv, words, distance)
        out[distance] = evaluate(words, score, planted, significance(score)[1])
    return out


def run_one(corpus: str, pieces: list[list[str]], k: int, seed: int, args, overrides: dict) -> dict:
    first, second = halves(pieces, seed, args.halves)
    counts_a, counts_b = Counter(w for s in first for w in s), Counter(w for s in second for w in s)
    pairs = matched_pairs(counts_a, counts_b, k, args.min_count, seed, exclude=STOPWORDS) if k else []
    planted = {w for pair in pairs for w in pair}
    second = swap_words(second, pairs) if pairs else second
    slices = {"a": first, "b": second}
    record = {"corpus": corpus, "k": k, "seed": seed, "pairs": pairs,
              "tokens": [sum(map(len, first)), sum(map(len, second))], "results": {}, "times": {}}
    workers = dict(workers=args.workers, seed=seed)
    if "cade" in args.methods:
        cade_settings = CadeSettings(**workers | {"compass_epochs": 5, "slice_epochs": 5, "epoch_words": 0, "replicates": 0,
                                                      "null_replicates": 0})
        alignment, record["times"]["cade"] = timed(lambda: align(slices, cade_settings))
        record["results"]["cade/cosine"] = rankings(alignment, planted, args.compare_min_count)["cosine"]
    settings = CadeSettings(**workers | SPLIT_HALF | overrides)
    alignment, record["times"]["default"] = timed(lambda: align(slices, settings))
    for name, result in rankings(alignment, planted, args.compare_min_count).items():
        record["results"][f"default/{name}"] = result
    context, record["times"]["context_test"] = timed(lambda: context_rankings(alignment, planted, args.compare_min_count,
                                                                             args.permutations))
    for name, result in context.items():
        record["results"][f"default/{name}"] = result
    # What the context measure needs of the training: the compass and one model per slice, no replicates.
    record["times"]["default_without_replicates"] = {"wall_s": sum(alignment.stats[n].seconds for n in ("compass", "a", "b"))}
    record["epochs"] = {name: stat.epochs for name, stat in alignment.stats.items()}
    words = eligible_words(alignment, "a", "b", args.compare_min_count, STOPWORDS)
    score, record["times"]["ppmi"] = timed(lambda: ppmi_split_half(first, second, words, seed))
    record["results"]["count/ppmi_split_half"] = evaluate(words, score, planted, None)
    if pairs:
        ranks = {name: record["results"][f"default/{name}"].get("planted_ranks", {})
                 for name in ("split_half", "context") if f"default/{name}" in record["results"]}
        record["pair_diagnostics"] = [
            {"pair": [x, y], "centred_cosine": round(centred_similarity(alignment.vectors("a"), words, x, y), 3),
             "pair_p": pair_distinguishability(alignment, x, y),
             "ranks": {name: [r.get(x), r.get(y)] for name, r in ranks.items()}} for x, y in pairs]
    if "unaligned" in args.methods and k:
        results, record["times"]["unaligned"] = timed(lambda: unaligned(first, second, settings, planted,
                                                                        args.compare_min_count))
        for name, result in results.items():
            record["results"][f"unaligned/{name}"] = result
    return record


def mean_ci(values: list[float]) -> str:
    if not values:
        return "-"
    m = statistics.fmean(values)
    if len(values) < 2:
        return f"{m:.2f}"
    from scipy.stats import t

    half = t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return f"{m:.2f} ± {half:.2f}"


def markdown(records: list[dict], args, command: str, seconds: dict) -> str:
    lines = [f"## {date.today().isoformat()}: planted shifts on real text (bench/bench_cade_shift.py)", "",
             f"Command: `{command}`", "",
             f"Halves of up to {args.tokens_per_half:,} tokens (units of <= {args.unit_tokens} tokens, {args.halves} "
             f"halves); planted words and compared words: count >= {args.min_count} in both halves, stopwords "
             f"excluded (compared words: count >= {args.compare_min_count}); significance: q < {FDR}. Mean ± 95% t-interval over seeds, then the per-seed values.", ""]
    planted_runs = [r for r in records if r["k"]]
    methods = list(dict.fromkeys(m for r in planted_runs for m in r["results"]))
    for corpus in dict.fromkeys(r["corpus"] for r in records):
        runs = [r for r in planted_runs if r["corpus"] == corpus]
        if not runs:
            continue
        tokens = runs[0]["tokens"]
        lines += [f"### {corpus} ({tokens[0]:,} + {tokens[1]:,} tokens, {runs[0]['results'][methods[-1]]['words']} "
                  "compared words)", "",
                  "| ranking | k | p@2k | per seed | MRR | per seed | planted q<0.05 | other q<0.05 |",
                  "|---|---|---|---|---|---|---|---|"]
        for method in methods:
            for k in sorted({r["k"] for r in runs}):
                rows = [r["results"][method] for r in runs if r["k"] == k and method in r["results"]]
                if not rows:
                    continue
                p = [row["p_at_2k"] for row in rows]
                mrr = [row["mrr"] for row in rows]
                sig = [row.get("planted_significant") for row in rows]
                other = [row.get("other_significant") for row in rows]
                lines.append(f"| {method} | {k} | {mean_ci(p)} | {', '.join(f'{x:.2f}' for x in p)} | {mean_ci(mrr)} | "
                             f"{', '.join(f'{x:.2f}' for x in mrr)} | "
                             f"{mean_ci([s for s in sig if s is not None]) if sig[0] is not None else '-'} | "
                             f"{', '.join(str(o) for o in other) if other[0] is not None else '-'} |")
        lines.append("")
    nulls = [r for r in records if not r["k"]]
    if nulls:
        lines += ["### Null runs (nothing swapped): the top 5 words and their q", "",
                  "| corpus | seed | ranking | words q<0.05 | top words (shift, q) |", "|---|---|---|---|---|"]
        for r in nulls:
            for method, result in r["results"].items():
                if method not in ("default/context", "default/split_half", "default/split_half_efron", "default/cosine",
                                  "cade/cosine"):
                    continue
                top = ", ".join(f"{w} ({s:.3g}, {'-' if q is None or q != q else f'{q:.2g}'})" for w, s, q in result["top"])
                lines.append(f"| {r['corpus']} | {r['seed']} | {method} | {result.get('other_significant', '-')} | {top} |")
        lines.append("")
    lines += ["### Time per training (seconds, mean over runs)", "", "| training | wall | CPU (user+sys) |", "|---|---|---|"]
    for name in dict.fromkeys(n for r in records for n in r["times"]):
        walls = [r["times"][name]["wall_s"] for r in records if name in r["times"]]
        cpus = [r["times"][name]["cpu_s"] for r in records if "cpu_s" in r["times"].get(name, {})]
        lines.append(f"| {name} | {statistics.fmean(walls):.1f} | {f'{statistics.fmean(cpus):.1f}' if cpus else '-'} |")
    lines += ["", f"Whole benchmark: {seconds['wall_s']:.0f} s wall, {seconds['cpu_s']:.0f} s CPU "
              f"({len(records)} runs; epochs of the default run: {records[-1]['epochs']}).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default=",".join(BUILTIN), help="builtin corpora, comma separated")
    parser.add_argument("--corpus", action="append", default=[],
                        help="a corpus file: .txt (one text per line) or .parquet/.csv/.jsonl with a 'text' column")
    parser.add_argument("--k", default="4,8", help="planted pairs per run, comma separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--null-seeds", default="0,1", help="seeds of the null runs (nothing swapped)")
    parser.add_argument("--tokens-per-half", type=int, default=80_000)
    parser.add_argument("--unit-tokens", type=int, default=200)
    parser.add_argument("--min-count", type=int, default=20, help="planted words: count >= this in both halves")
    parser.add_argument("--compare-min-count", type=int, default=None,
                        help="compared (ranked) words: count >= this in both halves (default: --min-count)")
    parser.add_argument("--halves", choices=("random", "alternate"), default="random",
                        help="how units are split into halves: seeded random, or even/odd units")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default="cade,default,unaligned", help="trainings to run")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a CadeSettings field of the default training (repeatable)")
    parser.add_argument("--permutations", type=int, default=1000, help="relabellings per word of the context test")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path, help="append the tables to this file")
    args = parser.parse_args()
    args.methods = set(args.methods.split(","))
    args.compare_min_count = args.compare_min_count or args.min_count
    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = type(getattr(CadeSettings(), field))(value)
    names = [c for c in args.corpora.split(",") if c] + args.corpus
    ks = [int(k) for k in args.k.split(",") if k]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    null_seeds = [int(s) for s in args.null_seeds.split(",") if s]
    records = []
    started, started_cpu = time.perf_counter(), cpu()
    for name in names:
        pieces = units(read_corpus(name), args.unit_tokens, 2 * args.tokens_per_half)
        label = Path(name).name if name not in BUILTIN else name
        jobs = [(k, s) for k in ks for s in seeds] + [(0, s) for s in null_seeds]
        for k, seed in jobs:
            record = run_one(label, pieces, k, seed, args, overrides)
            records.append(record)
            summary = {m: (round(r.get("p_at_2k", float("nan")), 2), r.get("other_significant"))
                       for m, r in record["results"].items()}
            print(f"{label} k={k} seed={seed} {summary} {record['times']}", flush=True)
    seconds = {"wall_s": time.perf_counter() - started, "cpu_s": cpu() - started_cpu}
    command = "python bench/bench_cade_shift.py " + " ".join(sys.argv[1:])
    text = markdown(records, args, command.strip(), seconds)
    print(text)
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"records": records, "seconds": seconds, "command": command}, indent=1))


if __name__ == "__main__":
    main()
