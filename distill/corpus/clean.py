"""Normalise article text: Unicode, quotes, dashes, ligatures and whitespace.

``clean_text`` works on one article at a time, so it can never merge two articles, and it is
idempotent: ``clean_text(clean_text(x)) == clean_text(x)``. It keeps what carries meaning:
diacritics (café), æ/œ, Greek, case (acronyms such as BBC, Roman numerals such as XIV), primes
(4° 10′), guillemets, and ``<math>``/TeX left by ``convert``. Full-width ASCII forms (``＝``,
``＋``, ``Ａ``: the Halfwidth and Fullwidth Forms block U+FF01-U+FF5E only) become their ASCII
characters, as NFKC would make them; no other compatibility character is folded.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Iterable

from distill.atomic import atomic_write
from distill.corpus.records import format_record, iter_records, strip_markers

_TRANSLATE = str.maketrans(
    {
        # Typographic ligatures (compatibility characters); æ and œ are letters and stay.
        "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st",
        # Curly and low quotes become straight ones.
        "‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"', "‟": '"',
        # Dashes: hyphen-like -> "-", number-range dashes -> en dash, sentence dashes -> em dash.
        "‐": "-", "‑": "-", "‒": "–", "―": "—", "⸺": "—", "⸻": "—", "﹘": "—",
        # Invisible characters go.
        "\u00ad": None, "\u200b": None, "\u2060": None, "\ufeff": None,
        # Line and paragraph separators become newlines.
        "\r": "\n", "\u2028": "\n", "\u2029": "\n", "\x0b": "\n", "\x0c": "\n", "\x85": "\n",
        # Full-width ASCII (＝ ＋ Ａ ０ ...) -> ASCII, what NFKC gives for U+FF01-U+FF5E.
        **{chr(code): unicodedata.normalize("NFKC", chr(code)) for code in range(0xFF01, 0xFF5F)},
    }
)
# Every other kind of space (tab, no-break, thin, em, ideographic ...) becomes a plain space.
_SPACES = re.compile(r"[^\S\n]")
_CONTROL = re.compile(r"[\x00-\x09\x0e-\x1f\x7f-\x84\x86-\x9f]")
_DOUBLE_HYPHEN = re.compile(r"(?<!-)--(?!-)")
_SPACED_EM_DASH = re.compile(r" *— *")
_MULTI_SPACE = re.compile(r" {2,}")


def clean_text(text: str) -> str:
    """One article's text, normalised; paragraphs separated by single newlines, no empty lines."""
    text = unicodedata.normalize("NFC", text).translate(_TRANSLATE)
    text = _CONTROL.sub("", text.replace("\t", " "))
    text = _SPACES.sub(" ", text)
    # Markers go before the dash rules: removing "<s>" (or ＜ｓ＞) can bring a space or hyphen next to a dash.
    text = strip_markers(text)
    text = _DOUBLE_HYPHEN.sub("—", text)
    text = _SPACED_EM_DASH.sub("—", text)
    text = _MULTI_SPACE.sub(" ", text)
    lines = (line.strip(" ") for line in text.split("\n"))
    text = "\n".join(line for line in lines if line)
    # Removing characters above can bring a base letter next to its combining mark.
    return unicodedata.normalize("NFC", text)


def clean_records(texts: Iterable[str]) -> list[str]:
    """Clean every article; articles that become empty are dropped, none are merged."""
    cleaned = (clean_text(text) for text in texts)
    return [text for text in cleaned if text]


def clean_file(input_path: str | Path, output_path: str | Path) -> dict:
    """Clean a record file (``combined.txt``) into another (``cleaned.txt``); returns counts."""
    texts = list(iter_records(input_path))
    cleaned = clean_records(texts)
    with atomic_write(output_path) as handle:
        for text in cleaned:
            handle.write(format_record(text))
    return {"input_articles": len(texts), "articles": len(cleaned), "dropped_empty": len(texts) - len(cleaned)}
