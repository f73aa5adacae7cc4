"""Save and load an :class:`~components.cade.alignment.Alignment`: safetensors and JSON, no pickle.

Layout of the directory::

    cade.json                      settings, slice names -> files, token counts, training stats
    compass.safetensors            compass embedding (count = over all slices)
    context.npy                    the frozen context matrix (compass syn1neg), rows in compass order
    slices/00-news.safetensors     one embedding per slice (slice vocabulary only, count = in that slice)
    replicates/00-news-r0-h1.safetensors   split-half replicates: half 1 and 2 of replicate 0, ...
    replicates/00-news-n0-q1.safetensors   quarter replicates (the significance null): quarter 1-4 of 0, ...
    texts.json.gz                  each slice's token lists, as trained on (the context measure reads them)

Each embedding file holds the tensors ``vectors`` [words, dim] and ``counts`` [words] and, in its
metadata, ``keys`` (the words in row order, as JSON). gensim's own ``KeyedVectors.save`` pickles, which
runs code on load and writes timestamps into the bytes; these files load without executing anything
and the same vectors always give the same bytes, so equal alignments have equal digests.
``read_keyed_vectors(path)`` gives a gensim KeyedVectors with the ``count`` attribute, so frequency
filters work after a reload.

Usage::

    from components.cade.files import save_alignment, load_alignment
    save_alignment(alignment, "out/cade")        # writes a temp dir beside it, then renames into place
    alignment = load_alignment("out/cade")
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from gensim.models import KeyedVectors
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

from components.cade.alignment import Alignment
from components.cade.compass import COMPASS
from components.cade.errors import CadeError
from components.cade.settings import CadeSettings
from components.cade.slices import SliceStats

FORMAT = 4  # 1: pickled gensim .kv files; 2: no split-half replicates; 3: no texts (2 and 3 still read)
READABLE = (2, 3, 4)
MANIFEST = "cade.json"
TEXTS = "texts.json.gz"


def _write_texts(texts: dict[str, list[list[str]]], path: Path) -> None:
    # mtime=0 and a fixed file name in the header: the same texts always give the same bytes
    data = json.dumps(texts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(filename="texts.json", mode="wb", fileobj=raw, mtime=0) as fh:
        fh.write(data)


def _read_texts(path: Path) -> dict[str, list[list[str]]]:
    if not path.is_file():
        return {}
    with gzip.open(path, "rb") as fh:
        return json.loads(fh.read().decode("utf-8"))


def write_keyed_vectors(kv: KeyedVectors, path: Path) -> None:
    counts = np.array([kv.get_vecattr(word, "count") for word in kv.index_to_key], dtype=np.int64)
    save_file({"vectors": np.ascontiguousarray(kv.vectors), "counts": counts}, str(path),
              metadata={"keys": json.dumps(list(kv.index_to_key), ensure_ascii=False)})


def read_keyed_vectors(path: str | Path) -> KeyedVectors:
    with safe_open(str(path), framework="numpy") as fh:
        keys = json.loads(fh.metadata()["keys"])
    tensors = load_file(str(path))
    vectors = tensors["vectors"]
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=vectors.dtype)
    kv.add_vectors(keys, vectors)
    kv.allocate_vecattrs(attrs=["count"], types=[np.int64])
    kv.expandos["count"][:] = tensors["counts"]
    return kv


def _file_name(index: int, name: str) -> str:
    # Slice names are user text (time periods, paths): the index keeps files unique, the slug readable.
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return f"{index:02d}-{slug}.safetensors" if slug else f"{index:02d}.safetensors"


def save_alignment(alignment: Alignment, directory: str | Path, overwrite: bool = False) -> Path:
    """Write ``alignment`` to ``directory`` (created); returns its path.

    Everything is written to a temporary sibling directory first and renamed into place only when
    complete, so a failure leaves no partial directory. An existing non-empty ``directory`` is an error
    unless ``overwrite`` (then it is replaced only after the new one is complete).
    """
    target = Path(directory)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise CadeError(f"{target} already exists and is not empty (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / "slices").mkdir()
        write_keyed_vectors(alignment.compass, tmp / "compass.safetensors")
        np.save(tmp / "context.npy", np.asarray(alignment.context))
        files, replicate_files, null_files = {}, {}, {}
        for index, (name, kv) in enumerate(alignment.slices.items()):
            files[name] = f"slices/{_file_name(index, name)}"
            write_keyed_vectors(kv, tmp / files[name])
            stem = files[name].removeprefix("slices/").removesuffix(".safetensors")
            for kind, letters, source, listing in (("r", "h", alignment.replicates, replicate_files),
                                                   ("n", "q", alignment.null_replicates, null_files)):
                listing[name] = []
                for r, parts in enumerate(source.get(name, [])):
                    paths = [f"replicates/{stem}-{kind}{r}-{letters}{h}.safetensors" for h in range(1, len(parts) + 1)]
                    (tmp / "replicates").mkdir(exist_ok=True)
                    for part, path in zip(parts, paths):
                        write_keyed_vectors(part, tmp / path)
                    listing[name].append(paths)
        if alignment.texts:
            _write_texts(alignment.texts, tmp / TEXTS)
        manifest = {
            "format": FORMAT,
            "settings": alignment.settings.to_dict(),
            "slices": files,
            "replicates": replicate_files,
            "null_replicates": null_files,
            "tokens": alignment.tokens,
            "vocabulary": {COMPASS: len(alignment.compass)} | {n: len(kv) for n, kv in alignment.slices.items()},
            "stats": {name: stats.to_dict() for name, stats in alignment.stats.items()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if target.exists():
            old = target.with_name(f".{target.name}.old-{tmp.name[-8:]}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_alignment(directory: str | Path) -> Alignment:
    """The Alignment saved by :func:`save_alignment`; CadeError if ``directory`` does not hold one."""
    root = Path(directory)
    path = root / MANIFEST
    if not path.is_file():
        raise CadeError(f"{root} holds no CADE alignment (no {MANIFEST})")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") not in READABLE:
        raise CadeError(f"{path}: unsupported format {manifest.get('format')!r} (expected {FORMAT}; "
                        "format 1 was pickled gensim files: run the cade_align stage again)")
    stats = {
        name: SliceStats(raw_words=s["raw_words"], effective_words=s["effective_words"], seconds=s["seconds"],
                         epochs=s.get("epochs", 0))
        for name, s in manifest["stats"].items()
    }
    replicates, null_replicates = (
        {name: [tuple(read_keyed_vectors(root / path) for path in paths) for paths in listed]
         for name, listed in manifest.get(key, {}).items()}
        for key in ("replicates", "null_replicates"))
    context = np.load(root / "context.npy")
    context.flags.writeable = False
    return Alignment(
        settings=CadeSettings(**manifest["settings"]),
        compass=read_keyed_vectors(root / "compass.safetensors"),
        context=context,
        slices={name: read_keyed_vectors(root / file) for name, file in manifest["slices"].items()},
        stats=stats,
        tokens={name: int(n) for name, n in manifest["tokens"].items()},
        replicates=replicates,
        null_replicates=null_replicates,
        texts=_read_texts(root / TEXTS),
    )
