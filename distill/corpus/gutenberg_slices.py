"""Project Gutenberg slice files: reading them (``.txt``/``.txt.gz``, UTF-8 or Latin-1), their
START/END boilerplate and their reading order. What is in a slice is read by :mod:`distill.corpus.gutenberg`.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

from distill.errors import DistillError

_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*$", re.MULTILINE)
_END = re.compile(r"^\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG.*$", re.MULTILINE)
_END_LINE = re.compile(r"^End of (the )?Project Gutenberg", re.IGNORECASE | re.MULTILINE)


def read_gutenberg_file(path: str | Path) -> str:
    """The text of a ``.txt`` or ``.txt.gz`` file: UTF-8 (with or without BOM), else Latin-1; LF line ends."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DistillError(f"{path}: cannot be read ({err}); download it again (python -m distill.corpus fetch-gutenberg)") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def is_gutenberg_text(text: str) -> bool:
    """True when ``text`` carries Project Gutenberg's START line in its first 20k characters."""
    return _START.search(text[:20000]) is not None


def strip_boilerplate(text: str, source: str = "") -> str:
    """The text between Project Gutenberg's START and END lines (licence, header and footer go)."""
    start = _START.search(text)
    if start is None:
        raise DistillError(f"{source}: no '*** START OF THE PROJECT GUTENBERG EBOOK' line; is this a Project Gutenberg text file? (--format gutenberg)")
    end = _END.search(text, start.end())
    body = text[start.end(): end.start() if end else len(text)]
    tail = _END_LINE.search(body)
    if tail:
        body = body[: tail.start()]
    return body


_SLICE_ORDER = re.compile(r"volume-(\d+)-(slice|part|appendix)-?(\d*)")


def slice_order(path: Path) -> tuple:
    """Files in reading order: volume, then slices and parts by number (appendices last)."""
    match = _SLICE_ORDER.search(path.name)
    if not match:
        return (10**6, path.name)
    kind = {"slice": 0, "part": 1, "appendix": 2}[match.group(2)]
    return (int(match.group(1)), kind, int(match.group(3) or 0), path.name)


def gutenberg_files(source: Path) -> list[Path]:
    """Every ``.txt``/``.txt.gz`` under ``source`` (recursively), in reading order."""
    if source.is_file():
        return [source]
    files = [p for p in source.rglob("*") if p.is_file() and (p.name.endswith(".txt") or p.name.endswith(".txt.gz"))]
    return sorted(files, key=slice_order)


def is_gutenberg_file(path: Path) -> bool:
    """True when ``path`` is a Project Gutenberg text file (``.txt`` or ``.txt.gz``). A file that
    cannot be read is an error, not a "no": a damaged download must not be skipped unseen."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                head = handle.read(20000)
        else:
            with open(path, "rb") as handle:
                head = handle.read(20000)
    except (OSError, EOFError) as err:
        raise DistillError(f"{path}: cannot be read ({err}); download it again (python -m distill.corpus fetch-gutenberg) or remove it") from None
    return is_gutenberg_text(head.decode("latin-1"))
