"""Turn MediaWiki markup into plain prose paragraphs.

Usage::

    from components.data.wikitext import clean_wikitext
    clean_wikitext("'''Albedo''' is the [[diffuse reflection|diffuse reflectivity]] of a surface.")
    # 'Albedo is the diffuse reflectivity of a surface.'

gensim's ``filter_wiki`` does the heavy lifting (templates, links, refs, tags, tables). What it
leaves behind is handled here, line by line:

- image/file links are removed *before* filter_wiki, because filter_wiki keeps their captions and a
  caption would otherwise become an article's first paragraph;
- section headings (``== History ==``) are dropped, and so is everything from the first back-matter
  heading (See also, References, Notes, External links, ...) on: link lists, not prose;
- bold/italic quotes and list bullets are stripped;
- a line is kept as a paragraph only if it has at least 5 words, contains no ``|`` (table residue)
  and ends like a sentence or an introduction (``. ! ? : ;``, maybe followed by a quote/bracket).
  Table cells, captions and bare list items fail this test and are dropped.

Paragraphs are joined with a blank line ("\\n\\n").
"""

from __future__ import annotations

import re

from gensim.corpora.wikicorpus import filter_wiki

_FILE_LINK = re.compile(r"\[\[\s*(?:file|image)\s*:", re.IGNORECASE)
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+$")
_BACK_MATTER = {
    "see also",
    "references",
    "notes",
    "external links",
    "further reading",
    "bibliography",
    "sources",
    "citations",
    "footnotes",
    "notes and references",
    "references and notes",
}
_SENTENCE_END = re.compile(r"[.!?:;][\"'\u201d\u2019)\]]*$")
_MIN_WORDS = 5
# filter_wiki removes templates such as pronunciations, leaving "Lincoln (; February 12, 1809 ...)"
# or "Andorra (; , )": drop separators that now open a bracket, then brackets left empty.
_LEADING_SEPARATORS = re.compile(r"\(\s*(?:[,;:]\s*)+")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)])")


def drop_file_links(raw: str) -> str:
    """Remove ``[[File:...]]`` / ``[[Image:...]]`` including nested links inside the caption."""
    out: list[str] = []
    pos = 0
    for match in _FILE_LINK.finditer(raw):
        if match.start() < pos:  # inside a file link already removed
            continue
        depth, i = 0, match.start()
        while i < len(raw):
            if raw.startswith("[[", i):
                depth, i = depth + 1, i + 2
            elif raw.startswith("]]", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    break
            else:
                i += 1
        out.append(raw[pos : match.start()])
        pos = i
    out.append(raw[pos:])
    return "".join(out)


def _clean_line(line: str) -> str:
    line = line.replace("'''", "").replace("''", "")
    line = re.sub(r"^[*#:;]+\s*", "", line.strip())
    line = _LEADING_SEPARATORS.sub("(", line)
    line = _EMPTY_BRACKETS.sub("", line)
    line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)
    return " ".join(line.split())


def _is_prose(line: str) -> bool:
    return len(line.split()) >= _MIN_WORDS and "|" not in line and bool(_SENTENCE_END.search(line))


def wiki_paragraphs(raw: str) -> list[str]:
    """The prose paragraphs of one article's wikitext, in order (may be empty)."""
    paragraphs: list[str] = []
    for line in filter_wiki(drop_file_links(raw)).split("\n"):
        heading = _HEADING.match(line.strip())
        if heading:
            if heading.group(1).strip().lower() in _BACK_MATTER:
                break
            continue
        cleaned = _clean_line(line)
        if _is_prose(cleaned):
            paragraphs.append(cleaned)
    return paragraphs


def clean_wikitext(raw: str) -> str:
    """Plain text of an article: its prose paragraphs joined by blank lines ("" when none)."""
    return "\n\n".join(wiki_paragraphs(raw))


def lead_paragraph(text: str) -> str:
    """The first paragraph of cleaned text that ends a sentence (not an introduction such as
    "X may refer to:"); "" when there is none."""
    for paragraph in text.split("\n\n"):
        if re.search(r"[.!?][\"'\u201d\u2019)\]]*$", paragraph):
            return paragraph
    return ""
