"""Debian text sources of the model search (sensdir.embedded.debian_text), on files written here in
each package's format (no third-party text in the repository)."""

from __future__ import annotations

import gzip

import pytest

from sensdir.embedded import debian_text as dt


def test_wordnet_lines_become_words_and_gloss(tmp_path, monkeypatch):
    (tmp_path / "data.noun").write_text(
        "  1 This software and database is being provided under a licence\n"
        '02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus Canis; "the dog barked"  \n'
    )
    for pos in ("verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text("")
    monkeypatch.setattr(dt, "WORDNET", tmp_path)
    assert list(dt._wordnet()) == ['dog, domestic dog: a member of the genus Canis; "the dog barked"']


def test_gcide_entries_lose_source_tags_and_keep_pronunciation_readable(tmp_path, monkeypatch):
    raw = (
        "00-database-info\n   This file was converted\n\n"
        'Abjure \\Ab*jure"\\, v. i.\n   To renounce on oath. --Bp. Burnet.\n   [1913 Webster]\n\n'
        "Ox\n   [PJC]\n"
    )
    path = tmp_path / "gcide.dict.dz"
    with gzip.open(path, "wt") as f:
        f.write(raw)
    monkeypatch.setattr(dt, "GCIDE", path)
    assert list(dt._gcide()) == ['Abjure (Ab*jure"), v. i.\nTo renounce on oath. --Bp. Burnet.']


def test_man_pages_keep_text_and_drop_requests():
    page = '.\\" comment\n.TH LS 1\n.SH NAME\nls \\- list directory contents\n.SH DESCRIPTION\n.B ls\nlists \\fBfiles\\fR.\n'
    assert dt._man_page(page) == "Name\nls - list directory contents\n\nDescription\nls\nlists files."


def test_chunks_hold_whole_pieces_and_ids_are_stable(monkeypatch):
    monkeypatch.setattr(dt, "CHUNK_CHARS", 10)
    chunks = list(dt._chunks(["aaaaaa", "bbbbbb", "cc"], "src"))
    assert [c["id"] for c in chunks] == ["src:0", "src:1"]
    assert chunks[0]["text"] == "aaaaaa\n\nbbbbbb" and chunks[1]["text"] == "cc"


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(dt.SOURCES, "gcide", (lambda: False, dt._gcide))
    dt.load.cache_clear()
    with pytest.raises(FileNotFoundError, match="apt-get install dict-gcide"):
        dt.load("gcide")
