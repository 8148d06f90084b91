"""JSON Lines input files (facts, BLiMP minimal pairs): one JSON object a line, blank lines skipped.

Every problem is a :class:`~distill.errors.DistillError` naming the file, the line and the fix.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from distill.errors import DistillError


def read_jsonl(path: str | Path, required: Sequence[str], fix: str) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line, each holding every key of ``required`` as a
    non-empty string; ``fix`` ends every error message (what a good line looks like)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DistillError(f"{path}: file not found; {fix}") from None
    except UnicodeDecodeError:
        raise DistillError(f"{path}: not UTF-8 text; {fix}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DistillError(f"{path}:{number}: not valid JSON ({err.msg}); {fix}") from None
        if not isinstance(row, dict):
            raise DistillError(f"{path}:{number}: expected a JSON object; {fix}")
        for key in required:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DistillError(f"{path}:{number}: no {key!r} (or not a non-empty string); {fix}")
        rows.append((number, row))
    return rows
