"""The methods are in the repository: every "METHODS §n" citation in code, configs, scripts and
docs names a section of docs/methods.md, and every source tag cited has a full reference there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ROOT / "docs" / "methods.md"
CITATION = re.compile(r"METHODS (§\d+(?:\s*(?:-|–|,|and|or)\s*§\d+)*)")
TAG = re.compile(r"\[(GP24|HM24|G24|LH24|C24|M24|R24|FH26|[A-Z]{1,3}\d{2})\]")


def _sources() -> list[Path]:
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "launch").glob("*.sh")]
    for sub, pattern in (("sensdir", "*.py"), ("sensdir", "*.yaml"), ("sensdir", "*.md"), ("tests", "*.py")):
        files += [p for p in (ROOT / sub).rglob(pattern) if "assets" not in p.parts]
    return files


def _sections() -> set[int]:
    return {int(m) for m in re.findall(r"^## (\d+)\. ", METHODS.read_text(), re.M)}


def test_every_methods_citation_names_a_section_of_docs_methods():
    sections = _sections()
    assert sections >= set(range(1, 12)), sorted(sections)
    bad, n = [], 0
    for path in _sources():
        for m in CITATION.finditer(path.read_text(errors="replace")):
            for num in map(int, re.findall(r"§(\d+)", m.group(1))):
                n += 1
                if num not in sections:
                    bad.append(f"{path.relative_to(ROOT)}: METHODS §{num}")
    assert n > 50, n  # the citations are found at all
    assert not bad, bad


def test_every_cited_source_has_a_full_reference():
    text = METHODS.read_text()
    refs = text.split("## References", 1)[1].split("\n## ", 1)[0]
    defined = set(re.findall(r"\*\*\[([A-Z]+\d{2})\]\*\*", refs))
    cited = set()
    for path in _sources():
        cited |= set(TAG.findall(path.read_text(errors="replace")))
    assert {"GP24", "HM24", "G24", "LH24", "C24", "M24", "R24"} <= cited
    assert cited <= defined, sorted(cited - defined)
    for tag in ("C24", "M24", "R24", "GP24", "LH24"):
        entry = refs.split(f"**[{tag}]**", 1)[1].split("\n- ", 1)[0]
        assert re.search(r"arXiv:\d{4}\.\d{4,5}", entry), tag


def test_readme_points_to_the_methods():
    assert "docs/methods.md" in (ROOT / "README.md").read_text()
