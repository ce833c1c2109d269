"""Offline English prose corpus built from the local Python standard library.

Three sources, all read from the interpreter that runs this module (nothing is downloaded and no
third-party text is stored in the repository):

* ``pydoc_data.topics.topics`` -- the language-reference topics that ``help()`` shows, one
  document per topic;
* docstrings of every module, class and function of every standard-library ``.py`` file, read with
  :mod:`ast` *without importing the module*, one document per file;
* paragraphs of full-line source comments of the same files, one document per file.

``site-packages`` is skipped; the standard library's own test suites are kept (their docstrings
and comments are English prose too).  Every document has a stable id
(``topic:<name>``, ``doc:<relative path>``, ``comment:<relative path>``); a SHA-256 hash of the id
decides deterministically whether it belongs to the ``train`` or the ``heldout`` split
(:data:`HELDOUT_PER_MILLE` per mille held out).

Parsing takes a few seconds, so the result is cached as gzipped JSON under
``~/.cache/sensdir/`` (override with ``$SENSDIR_CACHE``), keyed by the Python version and
:data:`CORPUS_VERSION`.  The text is under the PSF licence of the Python distribution it is read
from.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import re
import sys
import sysconfig
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

CORPUS_VERSION = 1
HELDOUT_PER_MILLE = 30
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
EOT = "<|endoftext|>"

Split = Literal["train", "heldout"]


def cache_dir() -> Path:
    root = os.environ.get("SENSDIR_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "sensdir"


def python_tag() -> str:
    return f"py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


def split_of(doc_id: str) -> Split:
    h = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")
    return "heldout" if h % 1000 < HELDOUT_PER_MILLE else "train"


def _stdlib_files(stdlib: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                out.append(Path(dirpath) / name)
    return out


def _read_source(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstrings(tree: ast.AST) -> list[str]:
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc.split()) >= 3:
                docs.append(doc.strip())
    return docs


_COMMENT_LINE = re.compile(r"^\s*#(.*)$")


def _comment_paragraphs(source: str) -> list[str]:
    paragraphs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            text = " ".join(current)
            words = text.split()
            letters = sum(c.isalpha() or c.isspace() for c in text)
            if len(words) >= 6 and letters >= 0.8 * len(text):
                paragraphs.append(text)
            current.clear()

    for i, line in enumerate(source.splitlines()):
        m = _COMMENT_LINE.match(line)
        if not m:
            flush()
            continue
        body = m.group(1).strip().lstrip("#").strip()
        if i < 2 and (body.startswith("!") or "coding" in body):
            continue
        if not body or set(body) <= set("-=*#~_ "):
            flush()
            continue
        current.append(body)
    flush()
    return paragraphs


def _build() -> list[dict]:
    import pydoc_data.topics

    docs: list[dict] = []
    for name in sorted(pydoc_data.topics.topics):
        text = pydoc_data.topics.topics[name].strip()
        if text:
            docs.append({"id": f"topic:{name}", "text": text})
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in _stdlib_files(stdlib):
        rel = path.relative_to(stdlib).as_posix()
        source = _read_source(path)
        if source is None:
            continue
        try:
            tree = ast.parse(source, filename=str(path))
        except (SyntaxError, ValueError):
            tree = None
        if tree is not None:
            ds = _docstrings(tree)
            if ds:
                docs.append({"id": f"doc:{rel}", "text": "\n\n".join(ds)})
        cs = _comment_paragraphs(source)
        if cs:
            docs.append({"id": f"comment:{rel}", "text": "\n\n".join(cs)})
    for d in docs:
        d["text"] = d["text"].replace(EOT, "")
        d["split"] = split_of(d["id"])
    return docs


def cache_path() -> Path:
    return cache_dir() / f"corpus-v{CORPUS_VERSION}-{python_tag()}.json.gz"


def cached_documents(path: Path, build: Callable[[], list[dict]]) -> tuple[dict, ...]:
    """Documents from the gzipped JSON cache at ``path``, else ``build()`` them and write the
    cache atomically (an unreadable cache is rebuilt)."""
    if path.exists():
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return tuple(json.load(f))
        except (OSError, ValueError):
            pass
    docs = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(docs, f)
    os.replace(tmp, path)
    return tuple(docs)


@lru_cache(maxsize=1)
def load_corpus() -> tuple[dict, ...]:
    """All documents as dicts ``{"id", "text", "split"}`` (cached on disk and in memory)."""
    return cached_documents(cache_path(), _build)


def documents(split: Split) -> list[str]:
    """Texts of the documents of one split, in a fixed order."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return [d["text"] for d in load_corpus() if d["split"] == split]


def document_ids(split: Split) -> list[str]:
    return [d["id"] for d in load_corpus() if d["split"] == split]


def stats() -> dict:
    out = {"python": python_tag(), "corpus_version": CORPUS_VERSION}
    for split in ("train", "heldout"):
        docs = documents(split)
        out[split] = {"documents": len(docs), "characters": sum(map(len, docs))}
    by_source: dict[str, int] = {}
    for d in load_corpus():
        src = d["id"].split(":", 1)[0]
        by_source[src] = by_source.get(src, 0) + len(d["text"])
    out["characters_by_source"] = by_source
    return out


if __name__ == "__main__":
    print(json.dumps(stats(), indent=2))
