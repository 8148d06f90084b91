"""Safe, collision-proof file names for article titles.

A title can hold anything (``/``, ``..``, 300 characters, Greek). The file name is an ASCII slug of
the title, cut to a readable length, plus a short hash of the full title (or of an explicit key),
so two titles never share a name even when their slugs agree, and no name can leave its folder.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

ARTICLE_PREFIX = "1911 Encyclopædia Britannica/"
SLUG_MAX = 80  # characters of readable slug before the hash
HASH_CHARS = 10  # hex digits of sha256: 40 bits, no collision across millions of titles in practice

# Letters that NFKD does not decompose into ASCII.
_FOLD = str.maketrans({"æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "TH", "ð": "d"})


def fold_ascii(text: str) -> str:
    """``text`` with letters folded towards ASCII: æ -> ae, ø -> o, accents dropped."""
    text = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def match_key(text: str) -> str:
    """``text`` reduced for matching names across sources: folded, upper case, ASCII letters and
    digits only ("Capefigue, Jean Baptiste Honoré" and "CAPEFIGUE, JEAN-BAPTISTE HONORÉ" agree)."""
    return "".join(ch for ch in fold_ascii(text).upper() if ch.isascii() and ch.isalnum())


def slugify(text: str, max_len: int = SLUG_MAX) -> str:
    """Lower-case ASCII words joined by ``-``; never empty, never starting with a dot."""
    slug = re.sub(r"[^a-z0-9]+", "-", fold_ascii(text).lower()).strip("-")
    slug = slug[:max_len].rstrip("-")
    return slug or "untitled"


def title_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:HASH_CHARS]


def safe_filename(title: str, suffix: str, key: str | None = None) -> str:
    """``<slug>-<hash><suffix>`` for ``title``; the hash is of ``key`` (default: the title itself).

    >>> safe_filename("1911 Encyclopædia Britannica/Abbey", ".json")[:36]
    '1911-encyclopaedia-britannica-abbey-'
    """
    return f"{slugify(title)}-{title_hash(title if key is None else key)}{suffix}"


def display_title(title: str) -> str:
    """``1911 Encyclopædia Britannica/Abbey`` -> ``Abbey`` (other titles unchanged)."""
    return title[len(ARTICLE_PREFIX):] if title.startswith(ARTICLE_PREFIX) else title


def article_filename(title: str, suffix: str = ".json") -> str:
    """The file of a WikiSource article: slug of its display title, hash of its full title."""
    return safe_filename(display_title(title), suffix, key=title)
