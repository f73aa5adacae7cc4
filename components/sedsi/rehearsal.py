"""Rehearsal Contents (RC) of SE-DSI (Tang et al., KDD 2023, arXiv 2305.15115, Sec. 3.3): the passages and
sentences of a document that the model learns to map to the document's elaborative description.

Example::

    rc = rehearsal_contents(doc_text, RehearsalSettings(style="leading"))
    rc.passages     # first 3 windows of 5 sentences (stride 2), in document order
    rc.sentences    # first 6 sentences
    rc.units()      # passages + sentences: one training pair (unit -> ED) each

    rc = select_rehearsal(doc_text, "summary")          # TextRank: top 1 passage, top 6 sentences
    rc = select_rehearsal(doc_text, "random", seed=f"7:{doc_id}")   # seeded ablation

Rules:
- sentences come from pysbd (English, clean=False), stripped, empty ones dropped;
- a passage is `size` consecutive sentences joined by one space; windows start at 0, stride, 2*stride, ...
  while start + size <= n, and when the last of them ends before n one more window [n - size, n) is added so
  that the tail of the document is covered; a document of at most `size` sentences is one passage;
- every style returns its choice in document order (never rank order), so a unit's position says where it
  sits in the document, and leading/summary/random outputs compare side by side;
- all styles are deterministic: summary breaks score ties by position, random takes an explicit seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

import networkx as nx
import pysbd
from summa.preprocessing import textcleaner
from summa.summarizer import _get_similarity

from semflow.config.sedsi import REHEARSAL_STYLES, RehearsalConfig

STYLES = REHEARSAL_STYLES
_DEFAULTS = RehearsalConfig()
_DEFAULT_COUNTS = {  # (passages, sentences) per style, from the config model (the paper's 3/6 and 1/6)
    "leading": (_DEFAULTS.passages, _DEFAULTS.sentences),
    "summary": (_DEFAULTS.summary_passages, _DEFAULTS.summary_sentences),
    "random": (_DEFAULTS.passages, _DEFAULTS.sentences),
}


@dataclass(frozen=True)
class Rehearsal:
    passages: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)

    def units(self) -> list[str]:
        """Passages then sentences: each one becomes a (unit -> ED) training example."""
        return [*self.passages, *self.sentences]


RehearsalSettings = RehearsalConfig  # the settings are the config model: one home for every default


def rehearsal_contents(text: str, settings: RehearsalSettings | None = None, seed: int | str = 0) -> Rehearsal:
    """The RC of one document under `settings` (default: leading 3/6; the seed matters for random only)."""
    settings = settings or RehearsalSettings()
    n_passages, n_sentences = settings.counts()
    return select_rehearsal(text, settings.style, n_passages, n_sentences, seed,
                            passage_size=settings.passage_size, passage_stride=settings.passage_stride)


def select_rehearsal(
    text: str, style: str = "leading", n_passages: int | None = None, n_sentences: int | None = None,
    seed: int | str = 0, passage_size: int = 5, passage_stride: int = 2,
) -> Rehearsal:
    """Pick passages and sentences of `text` by `style`; counts default to the paper's (leading 3/6,
    summary 1/6, random 3/6) and shrink to what a short document has.

    `seed` seeds the random style (an int, or a str such as f"{seed}:{doc_id}" so that documents of the same
    length do not all get the same positions; str seeds are hashed with SHA-512 by `random`, so they do not
    depend on PYTHONHASHSEED)."""
    if style not in STYLES:
        raise ValueError(f"rehearsal style {style!r} is not one of {', '.join(STYLES)}")
    default_passages, default_sentences = _DEFAULT_COUNTS[style]
    n_passages = default_passages if n_passages is None else n_passages
    n_sentences = default_sentences if n_sentences is None else n_sentences
    if n_passages < 0 or n_sentences < 0:
        raise ValueError(f"rehearsal counts must be >= 0, got passages={n_passages} sentences={n_sentences}")
    sents = split_sentences(text)
    if not sents:
        raise ValueError("the document has no sentence: its text is empty or whitespace only")
    windows = passages(sents, passage_size, passage_stride)
    if style == "leading":
        return Rehearsal(windows[:n_passages], sents[:n_sentences])
    if style == "summary":
        return Rehearsal(_top_in_order(windows, n_passages), _top_in_order(sents, n_sentences))
    rng = random.Random(seed)
    kept_windows = sorted(rng.sample(range(len(windows)), min(n_passages, len(windows))))
    kept_sents = sorted(rng.sample(range(len(sents)), min(n_sentences, len(sents))))
    return Rehearsal([windows[i] for i in kept_windows], [sents[i] for i in kept_sents])


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` by pysbd (English, clean=False), stripped, empty ones dropped.

    pysbd also ends a sentence at a newline ("Line one\\nLine two" gives two), and with clean=False keeps the
    text as written (no whitespace or bullet normalisation), which is why each segment is stripped here."""
    if not isinstance(text, str):
        raise TypeError(f"document text must be a str, got {type(text).__name__}")
    if not text.strip():
        return []
    return [s for s in (seg.strip() for seg in _segmenter().segment(text)) if s]


def passages(sentences: list[str], size: int = 5, stride: int = 2) -> list[str]:
    """Windows of `size` consecutive sentences joined by a space.

    Starts are 0, stride, 2*stride, ... while start + size <= n; if the last such window ends before n, one
    more window [n - size, n) is added (so 12 sentences with size 5, stride 2 give starts 0, 2, 4, 6, 7). At
    most `size` sentences give one passage of all of them; no sentence gives no passage."""
    _check_window(size, stride)
    n = len(sentences)
    if n == 0:
        return []
    if n <= size:
        return [" ".join(sentences)]
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] + size < n:
        starts.append(n - size)
    return [" ".join(sentences[s:s + size]) for s in starts]


def textrank_scores(units: list[str], damping: float = 0.85) -> list[float]:
    """TextRank centrality of each unit (sentence or passage) among `units`.

    summa's summarizer ranks only the sentences it splits itself (its regex splitter would cut our passages
    back into sentences, and merges identical sentences into one node), so its parts are used on our units:
    summa's text cleaner (lowercase, no numbers or punctuation, English stopwords, Snowball stems) and summa's
    TextRank similarity (shared stems / (log10|a| + log10|b|), Barrios et al. 2016). PageRank runs in networkx
    rather than summa's `pagerank_weighted_scipy`, which takes the first eigenvector scipy's `eig` returns:
    that is not always the one of eigenvalue 1 (8 random graphs in 2000 here), so it may rank by the wrong
    vector. As in summa, a unit similar to no other scores 0, and if no two units are similar all score equal.
    """
    if not units:
        return []
    tokens = _clean(units)
    graph = nx.Graph()
    graph.add_nodes_from(range(len(units)))
    for i in range(len(units)):
        for j in range(i + 1, len(units)):
            if tokens[i] and tokens[j]:
                weight = _get_similarity(tokens[i], tokens[j])
                if weight > 0:
                    graph.add_edge(i, j, weight=weight)
    if graph.number_of_edges() == 0:
        return [1.0 / len(units)] * len(units)
    connected = [i for i in graph.nodes if graph.degree(i) > 0]
    ranks = nx.pagerank(graph.subgraph(connected), alpha=damping, weight="weight", tol=1e-12, max_iter=1000)
    return [float(ranks.get(i, 0.0)) for i in range(len(units))]


def _top_in_order(units: list[str], k: int) -> list[str]:
    """The k best units by TextRank (ties to the earlier unit), returned in document order."""
    if k == 0 or not units:
        return []
    scores = textrank_scores(units)
    # rounding makes mathematically equal scores (symmetric units) tie exactly, so position decides
    best = sorted(range(len(units)), key=lambda i: (-round(scores[i], 9), i))[:k]
    return [units[i] for i in sorted(best)]


def _clean(units: list[str]) -> list[str]:
    textcleaner.init_textcleanner("english", None)  # module-level state in summa: set it on every call
    return textcleaner.filter_words(units)


@lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False)


def _check_window(size: int, stride: int) -> None:
    if size < 1:
        raise ValueError(f"passage size={size} must be >= 1 sentence")
    if not 1 <= stride <= size:
        raise ValueError(f"passage stride={stride} must be in 1..size={size} so that no sentence is skipped")
