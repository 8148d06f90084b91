"""The record format shared by combined/cleaned corpora and the split files.

Each article is one record ``<s> TEXT </s>\\n``: TEXT starts with the article's title on its own
line, then its paragraphs separated by single newlines, and never contains ``<s>`` or ``</s>``.
A record may span several lines; it ends at the first line that ends with ``</s>``.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable, Iterator

from distill.errors import DistillError, not_utf8

BOS, EOS = "<s>", "</s>"
_MARKER = re.compile(r"</?s>")


def strip_markers(text: str) -> str:
    """Remove every ``<s>``/``</s>`` from ``text``, including ones that a removal would create."""
    while _MARKER.search(text):
        text = _MARKER.sub("", text)
    return text


def format_record(text: str) -> str:
    """One record for ``text`` (which must already be free of markers and surrounding space)."""
    return f"{BOS} {text} {EOS}\n"


def records_sha256(texts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(format_record(text).encode("utf-8"))
    return digest.hexdigest()


def iter_records(path: str | Path) -> Iterator[str]:
    """Stream the texts of a record file, markers removed.

    Raises :class:`DistillError` naming the file when it is missing or not in record form.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"{path}: file not found; build it with python -m distill.corpus (combine, clean or split)")
    lines: list[str] | None = None  # the open record's lines; None between records
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\n")
                if lines is None:
                    if not line.strip():
                        continue
                    if not line.startswith(BOS):
                        raise DistillError(f"{path}:{number}: a record must start with '<s> '; rebuild it with python -m distill.corpus")
                    line = line[len(BOS):].lstrip(" ")
                    lines = []
                if line.endswith(EOS):
                    lines.append(line[: -len(EOS)].rstrip(" "))
                    yield "\n".join(lines)
                    lines = None
                else:
                    lines.append(line)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    if lines is not None:
        raise DistillError(f"{path}: the last record has no closing '</s>'; rebuild it with python -m distill.corpus")


def _not_utf8(path: Path, err: UnicodeDecodeError) -> DistillError:
    """The error for a record file that is not UTF-8, naming its first bad line (the text decoder
    reads in blocks, so its error knows the block, not the line)."""
    fix = "save it as UTF-8 or rebuild it with python -m distill.corpus"
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as line_err:
                return not_utf8(path, line_err, fix, line=number)
    return DistillError(f"{path}: not UTF-8 text ({err.reason}); {fix}")  # the file changed meanwhile


def read_split(path: str | Path) -> list[str]:
    """The article texts of a split (or combined/cleaned) file, without ``<s>``/``</s>``."""
    return list(iter_records(path))


def record_title(text: str) -> str:
    """The title of a record text: its first line."""
    return text.split("\n", 1)[0]


def count_words(text: str) -> int:
    """Words as the budgets count them: whitespace-separated tokens."""
    return len(text.split())
