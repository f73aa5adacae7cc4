"""Prompts with references built from the corpora shipped in gensim's wheel.

Usage::

    from semflow.config import BuiltinPrompts
    from components.data.prompts import builtin_prompts
    rows = builtin_prompts(BuiltinPrompts(per_family=4))
    [r["id"] for r in rows][:2]  # ['summarise-0000', 'summarise-0075']

Three task families, ``per_family`` prompts each, in the order summarise, encyclopedia, continue:

- summarise: a Lee news article without its lead sentence (cut to ``max_input_words`` words) -> the
  lead sentence, as XSum builds its pairs (Narayan et al. 2018, "Don't Give Me the Details, Just the
  Summary!", EMNLP, Section 2: the first sentence is the summary, the rest the document);
  ``summarise_input: article`` keeps the lead in the input (before 2026-12-02), where copying the
  input's first sentence reproduces the reference;
- encyclopedia: a Wikipedia title -> the article's lead paragraph, cut at a sentence boundary to
  ``max_input_words`` words;
- continue (``continue_source: lee``, the default): the first 40 words of a Lee news article that
  the summarise family does not use -> its next 40 words; (``continue_source: text8``) the first 40
  words of a text8 line -> the next 40. text8's head, as gensim ships it, is Porter-stemmed, lowercased
  word lists ("anarch greek rule stem archon ruler ..."): not text a model should learn to write, and a
  reference ROUGE-L cannot meaningfully score generated prose against (bench/results/distill.md, section 1c).

Records are taken spread evenly over each source (indices ``i * n // k``) so a small ``per_family``
still samples the whole corpus, not just its first articles. A family whose source has fewer usable
records than ``per_family`` (the wiki dump has about 100 articles) gets them all, and the shortfall
is reported as ``<family>_shortfall`` in the skipped counts instead of failing the run.

Everything is deterministic. Ids name the source record (``summarise-0007`` is Lee article 7,
``continue-lee-0012`` Lee article 12, ``continue-0003`` text8 line 3, ``encyclopedia-<title slug>``),
so a prompt keeps its id, and therefore its split, across runs.
"""

from __future__ import annotations

from typing import Any

from components.data.builtin import builtin_skipped, lee_articles, text8_lines, wiki_articles
from components.data.text import cut_at_sentences, first_words, slugify, split_sentences
from components.data.wikitext import lead_paragraph
from semflow.config import BuiltinPrompts

SUMMARISE = "Summarise the following news article in one sentence."
CONTINUE = "Continue the following text."
CONTINUE_WORDS = 40


def spread(n: int, k: int) -> list[int]:
    """min(k, n) indices spread evenly over range(n), starting at 0."""
    k = min(k, n)
    return [i * n // k for i in range(k)]


def _summarise(cfg: BuiltinPrompts) -> tuple[list[dict[str, Any]], int]:
    """The summarise family and how many of its articles had no text beside the lead sentence (counted
    and left out under ``summarise_input: rest``)."""
    articles = lee_articles()
    rows, no_rest = [], 0
    for i in _summarised(cfg):
        sentences = split_sentences(articles[i])
        body = " ".join(sentences[1:]) if cfg.summarise_input == "rest" else articles[i]
        if not body:
            no_rest += 1
            continue
        rows.append(
            {
                "id": f"summarise-{i:04d}",
                "family": "summarise",
                "instruction": SUMMARISE,
                "input": first_words(body, cfg.max_input_words),
                "reference": sentences[0],
            }
        )
    return rows, no_rest


def _summarised(cfg: BuiltinPrompts) -> list[int]:
    """The Lee articles the summarise family uses."""
    return spread(len(lee_articles()), cfg.per_family)


def _encyclopedia(cfg: BuiltinPrompts) -> tuple[list[dict[str, Any]], int]:
    # Only articles with a lead paragraph that ends a sentence make a usable reference; the rest
    # (e.g. "X may refer to:" disambiguation pages) are counted and left out.
    candidates = []
    for i, (title, text) in enumerate(wiki_articles()):
        lead = lead_paragraph(text)
        if lead:
            candidates.append((i, title, lead))
    no_lead = len(wiki_articles()) - len(candidates)
    rows, used = [], set()
    for j in spread(len(candidates), cfg.per_family):
        i, title, lead = candidates[j]
        slug = slugify(title) or f"{i:04d}"
        if slug in used:  # titles are unique, their slugs need not be
            slug = f"{slug}-{i:04d}"
        used.add(slug)
        rows.append(
            {
                "id": f"encyclopedia-{slug}",
                "family": "encyclopedia",
                "instruction": f"Write a short encyclopedia paragraph about {title}.",
                "input": "",
                "reference": cut_at_sentences(lead, cfg.max_input_words),
            }
        )
    return rows, no_lead


def _continue(cfg: BuiltinPrompts) -> tuple[list[dict[str, Any]], int]:
    """The continue family and how many source records were too short to use: a record needs more than
    CONTINUE_WORDS words (a Lee article: 2 x CONTINUE_WORDS, so that every reference is whole)."""
    if cfg.continue_source == "lee":
        summarised = set(_summarised(cfg))
        unused = [(i, a.split()) for i, a in enumerate(lee_articles()) if i not in summarised]
        candidates = [(f"continue-lee-{i:04d}", words) for i, words in unused if len(words) >= 2 * CONTINUE_WORDS]
        too_short = len(unused) - len(candidates)
    else:
        lines = text8_lines()
        candidates = [(f"continue-{i:04d}", line.split()) for i, line in enumerate(lines)
                      if len(line.split()) > CONTINUE_WORDS]
        too_short = len(lines) - len(candidates)
    rows = []
    for j in spread(len(candidates), cfg.per_family):
        row_id, words = candidates[j]
        rows.append(
            {
                "id": row_id,
                "family": "continue",
                "instruction": CONTINUE,
                "input": " ".join(words[:CONTINUE_WORDS]),
                "reference": " ".join(words[CONTINUE_WORDS : 2 * CONTINUE_WORDS]),
            }
        )
    return rows, too_short


def builtin_prompts_with_skipped(
    cfg: BuiltinPrompts,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The prompts and {reason: count}: source records that could not be used, and how many prompts
    each family is short of ``per_family`` (zeros included)."""
    summarise, no_rest = _summarise(cfg)
    encyclopedia, no_lead = _encyclopedia(cfg)
    continued, too_short = _continue(cfg)
    skipped = {
        **builtin_skipped("lee"),
        **builtin_skipped("wiki"),
        **(builtin_skipped("text8") if cfg.continue_source == "text8" else {}),
        "summarise_no_rest": no_rest,
        "encyclopedia_no_lead": no_lead,
        "continue_too_short": too_short,
    }
    for family, rows in (
        ("summarise", summarise),
        ("encyclopedia", encyclopedia),
        ("continue", continued),
    ):
        skipped[f"{family}_shortfall"] = cfg.per_family - len(rows)
    return summarise + encyclopedia + continued, skipped


def builtin_prompts(cfg: BuiltinPrompts) -> list[dict[str, Any]]:
    """Up to ``per_family`` prompts for each of the three families, as dicts with keys
    id, family, instruction, input, reference."""
    return builtin_prompts_with_skipped(cfg)[0]
