"""Paragraphs of converted text: blank lines part paragraphs, hard breaks part lines.

The WikiSource and HTML readers mark the line breaks a page shows (poems, ``<br>``, table rows) with
:data:`HARD_BREAK`, so that :func:`paragraphs` keeps them while it joins a paragraph's wrapped lines.
"""
from __future__ import annotations

import re

HARD_BREAK = "\x1e"  # a line break that survives paragraph joining (poems, <br>, table rows)


def paragraphs(text: str) -> str:
    """Blank lines separate paragraphs; single newlines inside one are spaces (as on a wiki);
    hard breaks stay line breaks. Returns the paragraphs joined by single newlines."""
    out = []
    for block in re.split(r"\n[^\S\n]*\n", text):
        joined = " ".join(block.split("\n"))  # no strip: it would take HARD_BREAK (a space to str.strip)
        for line in joined.split(HARD_BREAK):
            line = re.sub(r"\s+", " ", line).strip()
            if line:
                out.append(line)
    return "\n".join(out)
