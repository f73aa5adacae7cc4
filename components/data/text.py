"""Small, deterministic text helpers shared by the readers and the prompt builders.

Usage::

    from components.data.text import split_sentences, first_words, content_hash
    split_sentences("The U.S. team won. Fans cheered.")  # ['The U.S. team won.', 'Fans cheered.']
    first_words("a b c d", 2)                            # 'a b'
    content_hash("x", "y")                               # 16 hex chars, stable across runs
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# A sentence ends at . ! or ? (plus any closing quotes/brackets) followed by whitespace and a
# capital letter or an opening quote. A heuristic, not a tokenizer: it only picks a lead sentence or
# cuts a reference at a sentence boundary, where an occasional wrong split is harmless.
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]*[A-Z])")
# Periods that do not end a sentence: titles ("Dr. Smith") and initials ("U.S. forces", "J. Smith").
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Gen|Sen|Gov|Rep|Lt|Col|Capt|Sgt|Mt|No|vs|Inc|Corp|Ltd)"
    r"|\b[A-Z])\.$"
)


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, inner whitespace normalised to single spaces; no empty strings."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if _ABBREVIATION.search(text[start : match.start() + 1]):
            continue
        sentence = " ".join(text[start : match.end()].split())
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = " ".join(text[start:].split())
    if tail:
        sentences.append(tail)
    return sentences


def first_words(text: str, n: int) -> str:
    """The first `n` whitespace-separated words, joined by single spaces."""
    return " ".join(text.split()[:n])


def cut_at_sentences(text: str, max_words: int) -> str:
    """Whole sentences while they fit in `max_words`; a first sentence that is longer is cut.

    References are targets for a model, so ending mid-sentence only when unavoidable keeps them
    well-formed.
    """
    kept: list[str] = []
    used = 0
    for sentence in split_sentences(text):
        n = len(sentence.split())
        if used + n > max_words:
            break
        kept.append(sentence)
        used += n
    return " ".join(kept) if kept else first_words(text, max_words)


def content_hash(*parts: str) -> str:
    """sha1 over the parts joined by the ASCII unit separator, first 16 hex chars.

    The separator keeps ("ab", "c") and ("a", "bc") apart; 64 bits is plenty for dataset ids.
    """
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def slugify(title: str) -> str:
    """ASCII lowercase slug: 'Animalia (book)' -> 'animalia-book' ("" for non-Latin text)."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")


def word_tokens(text: str) -> list[str]:
    """The words CADE learns from (gensim's ``simple_preprocess``: lowercase alphabetic tokens of 2-15
    characters); data prep uses it to refuse a corpus with none, before anything trains on it."""
    from gensim.utils import simple_preprocess

    return simple_preprocess(text, deacc=False, min_len=2, max_len=15)

