"""BM25 baseline over documents (the sparse baseline of the SE-DSI tables), on bm25s.

Example::

    index = BM25Index.build(["d1", "d2"], ["The cat purrs on the mat.", "A dog barks at the mailman."])
    index.search(["which cat purrs"], k=10)         # [[("d1", ...)]]: "which" is a stopword, d2 shares nothing
    index.save("runs/bm25")                         # a directory: bm25s files + doc_ids.json
    index = BM25Index.load("runs/bm25")

Tokens: lowercased words of two or more characters (bm25s's default splitter), bm25s's English stopwords
removed, no stemming (PyStemmer would be one more compiled dependency, and an index built with it would not
load the same where it is missing). Scoring: bm25s defaults (Lucene BM25, k1=1.5, b=0.75).

A result list holds only documents that share at least one term with the query (score > 0), best first,
ties broken by build order; k larger than the corpus returns at most the corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import bm25s

_DOC_IDS = "doc_ids.json"
_STOPWORDS = "en"


@dataclass
class BM25Index:
    retriever: bm25s.BM25
    doc_ids: list[str]

    @classmethod
    def build(cls, doc_ids: list[str], texts: list[str], k1: float = 1.5, b: float = 0.75) -> BM25Index:
        """Index `texts`, one per doc id (ids unique)."""
        doc_ids, texts = list(doc_ids), list(texts)
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} doc ids for {len(texts)} texts: one id per text")
        if not doc_ids:
            raise ValueError("no document to index")
        if len(set(doc_ids)) != len(doc_ids):
            seen: set[str] = set()
            dupes = [d for d in doc_ids if d in seen or seen.add(d)]
            raise ValueError(f"doc ids must be unique; repeated: {dupes[:5]}")
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(_tokenize(texts), show_progress=False)
        return cls(retriever, doc_ids)

    def search(self, queries: list[str], k: int = 100) -> list[list[tuple[str, float]]]:
        """Per query, up to k (doc id, score) pairs, best first (see the module docstring)."""
        if k < 1:
            raise ValueError(f"k={k} must be >= 1")
        if not queries:
            return []
        k = min(k, len(self.doc_ids))
        indices, scores = self.retriever.retrieve(_tokenize(list(queries)), k=k, show_progress=False)
        results = []
        for row_ids, row_scores in zip(indices.tolist(), scores.tolist(), strict=True):
            hits = sorted((-score, i) for i, score in zip(row_ids, row_scores, strict=True) if score > 0)
            results.append([(self.doc_ids[i], -neg) for neg, i in hits])
        return results

    def save(self, directory: str | Path) -> Path:
        """Write the index to `directory` (created if needed); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(directory), show_progress=False)
        (directory / _DOC_IDS).write_text(json.dumps(self.doc_ids))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        """An index written by `save`."""
        directory = Path(directory)
        if not (directory / _DOC_IDS).is_file():
            raise FileNotFoundError(f"{directory} holds no BM25 index ({_DOC_IDS} is missing)")
        retriever = bm25s.BM25.load(str(directory), show_progress=False)
        doc_ids = json.loads((directory / _DOC_IDS).read_text())
        if len(doc_ids) != retriever.scores["num_docs"]:
            raise ValueError(f"{directory}: {len(doc_ids)} doc ids for {retriever.scores['num_docs']} indexed documents")
        return cls(retriever, doc_ids)


def _tokenize(texts: list[str]) -> list[list[str]]:
    # tokens as strings, not ids: bm25s maps them through the index's own vocabulary at query time, where
    # ids from a fresh tokenize call would not match it
    return bm25s.tokenize(texts, lower=True, stopwords=_STOPWORDS, return_ids=False, show_progress=False)
