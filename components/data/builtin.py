"""Readers for the offline text shipped inside gensim's wheel (``gensim.test.utils.datapath``).

Usage::

    from components.data.builtin import lee_articles, wiki_articles, text8_lines, builtin_skipped
    len(lee_articles())         # 300 news articles (Lee background corpus)
    wiki_articles()[0][0]       # 'Anarchism': (title, plain text) pairs, redirects excluded
    len(text8_lines())          # 250 lines of stemmed, lowercased tokens
    builtin_skipped("wiki")     # {'wiki_redirects': 99, 'wiki_other_namespace': 1, ...}

Every reader returns records in file order, so anything built from them is deterministic. Dropped
records (blank lines, redirects, pages with no prose left after markup removal) are counted, never
silently lost: ``builtin_skipped(name)`` returns those counts for the caller to log.

The files are parsed once per process (``functools.lru_cache``); the readers return fresh lists so a
caller mutating its result cannot corrupt the cache.
"""

from __future__ import annotations

import bz2
import functools
import xml.etree.ElementTree as ET
from typing import Literal

from gensim.test.utils import datapath

from components.data.errors import DataError
from components.data.wikitext import clean_wikitext

BuiltinName = Literal["lee", "wiki", "text8"]

LEE_FILE = "lee_background.cor"
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TEXT8_FILE = "head500.noblanks.cor"


@functools.lru_cache(maxsize=4)
def _read_lines(filename: str) -> tuple[tuple[str, ...], int]:
    """Non-empty lines (stripped of the line ending only) and the number of empty ones."""
    path = datapath(filename)
    try:
        with open(path, encoding="utf-8") as fh:
            # Text mode's universal newlines also turn head500's \r\n endings into plain lines.
            lines = fh.read().splitlines()
    except OSError as err:
        raise DataError(f"builtin corpus file {path} could not be read: {err}") from err
    kept = tuple(line for line in lines if line.strip())
    return kept, len(lines) - len(kept)


def lee_articles() -> list[str]:
    """The Lee background corpus: one news article per non-empty line, in file order."""
    return list(_read_lines(LEE_FILE)[0])


def text8_lines() -> list[str]:
    """The head of text8 as shipped by gensim: lines of stemmed lowercase tokens, in file order."""
    return list(_read_lines(TEXT8_FILE)[0])


def _local(tag: str) -> str:
    # iterparse reports "{http://www.mediawiki.org/xml/export-0.10/}page"; the export schema version
    # changes between dumps, so match on the local name rather than a hard-coded namespace.
    return tag.rsplit("}", 1)[-1]


def _page_fields(page: ET.Element) -> tuple[str, str, bool, str]:
    """(title, namespace, has <redirect>, raw wikitext) of one <page> element."""
    title = ns = raw = ""
    redirect = False
    for child in page:
        name = _local(child.tag)
        if name == "title":
            title = (child.text or "").strip()
        elif name == "ns":
            ns = (child.text or "").strip()
        elif name == "redirect":
            redirect = True
        elif name == "revision":
            for sub in child:
                if _local(sub.tag) == "text":
                    raw = sub.text or ""
    return title, ns, redirect, raw


@functools.lru_cache(maxsize=1)
def _parse_wiki() -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, int], ...]]:
    path = datapath(WIKI_FILE)
    articles: list[tuple[str, str]] = []
    redirects = other_namespace = empty = 0
    try:
        with bz2.open(path) as fh:
            for _, elem in ET.iterparse(fh, events=("end",)):
                if _local(elem.tag) != "page":
                    continue
                title, ns, redirect, raw = _page_fields(elem)
                # Free the page subtree: real dumps are far larger than memory.
                elem.clear()
                if ns != "0":  # Talk:, Wikipedia:, Template: ... pages are not articles
                    other_namespace += 1
                elif redirect or raw.lstrip()[:9].upper() == "#REDIRECT":
                    redirects += 1
                else:
                    text = clean_wikitext(raw)
                    if text:
                        articles.append((title, text))
                    else:  # e.g. disambiguation pages that are nothing but link lists
                        empty += 1
    except (OSError, EOFError, ET.ParseError) as err:
        raise DataError(f"builtin wiki dump {path} could not be parsed: {err}") from err
    skipped = (
        ("wiki_redirects", redirects),
        ("wiki_other_namespace", other_namespace),
        ("wiki_empty_text", empty),
    )
    return tuple(articles), skipped


def wiki_articles() -> list[tuple[str, str]]:
    """(title, text) of the main-namespace, non-redirect pages with prose, in dump order.

    ``text`` is plain prose from :func:`components.data.wikitext.clean_wikitext`: paragraphs joined
    by "\\n\\n", headings, tables, captions and reference sections removed.
    """
    return list(_parse_wiki()[0])


def builtin_skipped(name: BuiltinName) -> dict[str, int]:
    """What reading builtin corpus `name` dropped, as {reason: count} (zero counts included)."""
    if name == "wiki":
        return dict(_parse_wiki()[1])
    if name == "lee":
        return {"lee_empty_lines": _read_lines(LEE_FILE)[1]}
    if name == "text8":
        return {"text8_empty_lines": _read_lines(TEXT8_FILE)[1]}
    raise DataError(f"unknown builtin corpus {name!r}; expected one of: lee, wiki, text8")


def builtin_texts(name: BuiltinName) -> list[str]:
    """One text per record of builtin corpus `name` (a wiki record's text is its article body)."""
    if name == "wiki":
        return [text for _, text in wiki_articles()]
    if name == "lee":
        return lee_articles()
    if name == "text8":
        return text8_lines()
    raise DataError(f"unknown builtin corpus {name!r}; expected one of: lee, wiki, text8")
