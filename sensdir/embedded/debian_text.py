"""Broader English text for the embedded model, read at run time from installed Debian packages.

Nothing here is stored in the repository: each source is read from the files its package installs
(``apt-get install dict-gcide wordnet-base python3-doc manpages``) and the result is cached like
the stdlib corpus (:mod:`sensdir.embedded.corpus`). A missing package means a missing source,
reported by :func:`available`; the model card names the sources and licences of what was used.

=========  ==========================================  =========================================
source     files                                       licence
=========  ==========================================  =========================================
gcide      /usr/share/dictd/gcide.dict.dz              GPL-3+ (GNU Collaborative International
           (Webster 1913 + additions, dictd format)    Dictionary of English)
wordnet    /usr/share/wordnet/data.{noun,verb,adj,adv} WordNet 3.0 licence (Princeton, permissive)
pydocs     /usr/share/doc/python3.*/html/_sources      PSF-2.0 (Python documentation)
manpages   /usr/share/man/man{1,5,7,8}/*.gz            per page (GPL, BSD, MIT and others)
=========  ==========================================  =========================================

Documents are chunks of about :data:`CHUNK_CHARS` characters (whole entries, synsets, files or
pages), so that the hash split of :func:`sensdir.embedded.corpus.split_of` holds out a fair sample.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path

from .corpus import EOT, cache_dir, cached_documents, split_of

DEBIAN_TEXT_VERSION = 1
CHUNK_CHARS = 20_000
LICENCES = {
    "gcide": ("dict-gcide", "GPL-3+"),
    "wordnet": ("wordnet-base", "WordNet 3.0 licence"),
    "pydocs": ("python3-doc", "PSF-2.0"),
    "manpages": ("manpages and the man pages of installed packages", "per page: GPL, BSD, MIT, ..."),
}
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
WORDNET = Path("/usr/share/wordnet")
MAN_SECTIONS = ("man1", "man5", "man7", "man8")


def _chunks(pieces: Iterable[str], prefix: str) -> Iterator[dict]:
    buf: list[str] = []
    size, n = 0, 0
    for piece in pieces:
        buf.append(piece)
        size += len(piece)
        if size >= CHUNK_CHARS:
            yield {"id": f"{prefix}:{n}", "text": "\n\n".join(buf)}
            buf, size, n = [], 0, n + 1
    if buf:
        yield {"id": f"{prefix}:{n}", "text": "\n\n".join(buf)}


_GCIDE_NOISE = re.compile(r"^\s*\[(?:1913 Webster|PJC|Webster 1913 Suppl\.|[A-Z]{2,4})\]\s*$", re.M)


def _gcide() -> Iterator[str]:
    text = gzip.open(GCIDE).read().decode("utf-8", errors="replace")
    for entry in re.split(r"\n\s*\n", _GCIDE_NOISE.sub("", text)):
        entry = re.sub(r"\\([^\\\n]*)\\", r"(\1)", entry.strip())  # pronunciation \Ab*jure"\ -> (Ab*jure")
        if len(entry.split()) >= 4 and not entry.startswith("00-database"):
            yield re.sub(r"[ \t]*\n[ \t]+", "\n", entry)


def _wordnet() -> Iterator[str]:
    for pos in ("noun", "verb", "adj", "adv"):
        path = WORDNET / f"data.{pos}"
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or " | " not in line:
                continue  # licence header lines start with spaces
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(int(fields[3], 16))]
            yield f"{', '.join(words)}: {gloss.strip()}"


_RST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def _pydocs() -> Iterator[str]:
    roots = sorted(Path("/usr/share/doc").glob("python3.*/html/_sources"))
    for path in sorted(roots[-1].rglob("*.rst.txt")) if roots else []:
        lines = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lstrip().startswith("..") or re.fullmatch(r"\s*([=\-~^*#\"'])\1{3,}\s*", line):
                continue
            lines.append(_RST_ROLE.sub(r"\1", line).replace("``", ""))
        yield "\n".join(lines).strip()


_TROFF_FONT = re.compile(r"\\f(?:[BIRP1-4]|\(..|\[[^\]]*\])")
_TROFF_ESC = re.compile(r"\\(?:\(..|\[[^\]]*\]|[-&e|^%c]|s[-+]?\d)")


def _man_page(raw: str) -> str:
    out = []
    for line in raw.splitlines():
        if line.startswith(("'", '.\\"', ".\\}")):
            continue
        if line.startswith("."):
            parts = line.split(None, 1)
            if parts[0] in (".SH", ".SS") and len(parts) > 1:
                out.append("\n" + parts[1].strip('"').title())
            elif parts[0] in (".B", ".I", ".BR", ".IR", ".RB", ".RI", ".BI", ".IB") and len(parts) > 1:
                out.append(parts[1].replace('"', ""))
            continue
        out.append(_TROFF_ESC.sub(lambda m: "-" if m.group(0) == "\\-" else "", _TROFF_FONT.sub("", line)))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _manpages() -> Iterator[str]:
    for section in MAN_SECTIONS:
        for path in sorted((Path("/usr/share/man") / section).glob("*.gz")):
            try:
                raw = gzip.open(path).read().decode("utf-8", errors="replace")
            except (OSError, EOFError):
                continue
            if not raw.startswith(".so"):  # links to other pages
                text = _man_page(raw)
                if len(text.split()) >= 30:
                    yield text


SOURCES: dict[str, tuple[Callable[[], bool], Callable[[], Iterator[str]]]] = {
    "gcide": (GCIDE.is_file, _gcide),
    "wordnet": ((WORDNET / "data.noun").is_file, _wordnet),
    "pydocs": (lambda: bool(list(Path("/usr/share/doc").glob("python3.*/html/_sources"))), _pydocs),
    "manpages": (lambda: (Path("/usr/share/man") / "man1").is_dir(), _manpages),
}


def available() -> dict[str, bool]:
    return {name: present() for name, (present, _) in SOURCES.items()}


@cache
def load(source: str) -> tuple[dict, ...]:
    """Documents ``{"id", "text", "split"}`` of one source (built once, then cached on disk)."""
    present, read = SOURCES[source]
    if not present():
        package, _ = LICENCES[source]
        raise FileNotFoundError(f"text source {source!r} is not installed (apt-get install {package})")

    def build() -> list[dict]:
        docs = list(_chunks(read(), source))
        for d in docs:
            d["text"] = d["text"].replace(EOT, "")
            d["split"] = split_of(d["id"])
        return docs

    return cached_documents(cache_dir() / f"debian-{source}-v{DEBIAN_TEXT_VERSION}.json.gz", build)


def stats() -> dict:
    out = {}
    for name, ok in available().items():
        if ok:
            docs = load(name)
            package, licence = LICENCES[name]
            out[name] = {
                "package": package,
                "licence": licence,
                "documents": len(docs),
                "characters": {s: sum(len(d["text"]) for d in docs if d["split"] == s) for s in ("train", "heldout")},
            }
    return out


if __name__ == "__main__":
    print(json.dumps(stats(), indent=2))
