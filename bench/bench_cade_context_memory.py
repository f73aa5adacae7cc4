"""Peak memory and wall time of the context test (components.cade.contexts) on two large slices, tested a
block of words at a time (the default, at most MAX_OCCURRENCES occurrence vectors held) against all
words in one block, each in its own process, side by side in one run.

    .venv/bin/python bench/bench_cade_context_memory.py        # wiki vs text8 + Lee: ~400k tokens a slice

The slices: the Wikipedia sample against the text8 head and Lee news (every text, ~800k tokens), aligned
with 2 epochs (the vectors' quality does not matter here, only the texts and the compass). Prints per mode
the peak RSS above the loaded alignment (above the high-water mark after loading it: a lower bound on the
test's own memory, the same for both modes), the wall time, and how far the p values differ.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(path: Path) -> None:
    from components.cade import CadeSettings, align, save_alignment
    from components.cade.text import sentences_from_texts
    from components.data.builtin import builtin_texts

    a = list(sentences_from_texts(builtin_texts("wiki")))
    b = list(sentences_from_texts(builtin_texts("text8") + builtin_texts("lee")))
    settings = CadeSettings(compass_epochs=2, slice_epochs=2, epoch_words=0, workers=2, seed=0)
    save_alignment(align({"a": a, "b": b}, settings), path)


def measure(path: Path, mode: str) -> dict:
    import numpy as np
    from gensim.parsing.preprocessing import STOPWORDS

    import components.cade.contexts as contexts
    from components.cade import load_alignment
    from components.cade.shift import eligible_words

    alignment = load_alignment(path)
    words = eligible_words(alignment, "a", "b", 10, exclude=STOPWORDS)
    if mode == "one_block":
        contexts.MAX_OCCURRENCES = 10**12
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = contexts.context_test(alignment, "a", "b", words)
    return {"mode": mode, "words": len(words), "tokens": [sum(map(len, alignment.texts[s])) for s in "ab"],
            "wall_s": time.perf_counter() - started,
            "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
            "p": np.nan_to_num(result.p, nan=-1.0).tolist()}


def main() -> None:
    if len(sys.argv) == 3:  # a child: one mode, JSON on stdout
        print(json.dumps(measure(Path(sys.argv[1]), sys.argv[2])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alignment"
        build(path)
        runs = [json.loads(subprocess.run([sys.executable, __file__, str(path), mode], check=True,
                                          capture_output=True, text=True).stdout.splitlines()[-1])
                for mode in ("blocked", "one_block")]
    import numpy as np

    p, q = np.array(runs[0]["p"]), np.array(runs[1]["p"])
    ratio = np.abs(np.log(p[p > 0] / q[p > 0])).max()  # the fill is summed in another order: rounding
    print(f"{runs[0]['words']} words, {runs[0]['tokens'][0]:,} + {runs[0]['tokens'][1]:,} tokens; "
          f"largest |log(p_blocked / p_one_block)|: {ratio:.1e}")
    print("| mode | peak RSS above the alignment | wall |\n|---|---:|---:|")
    for run in runs:
        print(f"| {run['mode']} | {run['peak_mb']:.0f} MB | {run['wall_s']:.1f} s |")


if __name__ == "__main__":
    main()
