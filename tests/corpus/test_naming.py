"""File names from titles stay inside their folder and never collide."""
from __future__ import annotations

from pathlib import Path

from distill.corpus.naming import article_filename, safe_filename

TITLES = [
    "1911 Encyclopædia Britannica/Abbey",
    "1911 Encyclopædia Britannica/AC/DC",
    "1911 Encyclopædia Britannica/AC-DC",
    "../../etc/passwd",
    "..",
    ".hidden",
    "/",
    "",
    "A" * 300,
    "A" * 299 + "B",
    "Œdipus / Ödipus: ΔΥΝΑΣΤΕΙΑ",
    "con\x00trol\nchars",
]


def test_names_are_safe_and_distinct(tmp_path):
    names = [article_filename(title) for title in TITLES] + [safe_filename(title, ".txt") for title in TITLES]
    assert len(set(names)) == len(names)
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith(".") and ".." not in name
        assert len(name) <= 100 and name.isascii()
        path = tmp_path / name
        path.write_text("x")
        assert path.resolve().parent == tmp_path.resolve()


def test_names_are_stable_and_readable():
    assert article_filename("1911 Encyclopædia Britannica/Abbey") == article_filename("1911 Encyclopædia Britannica/Abbey")
    assert article_filename("1911 Encyclopædia Britannica/Blanqui, Louis Auguste").startswith("blanqui-louis-auguste-")
    assert safe_filename("Œdipus", ".txt").startswith("oedipus-")
    assert Path(safe_filename("", ".txt")).stem.startswith("untitled-")
