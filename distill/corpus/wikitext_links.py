"""WikiSource links to the words they show: ``[[target|shown]]``, ``[[target]]``, ``[url shown]``."""
from __future__ import annotations

import re

_DROP_LINK_NAMESPACES = ("file:", "image:", "category:", "media:")


def _link_text(inner: str) -> str:
    target, _, shown = inner.partition("|")
    if target.strip().lower().lstrip(":").startswith(_DROP_LINK_NAMESPACES):
        return ""
    if shown:
        return shown.rsplit("|", 1)[-1] if "|" in shown else shown
    target = target.strip().lstrip(":")
    target = re.sub(r"^(w|wikipedia|author|portal|s|wikt|wiktionary)\s*:", "", target, flags=re.IGNORECASE)
    return target.split("#", 1)[0]


def link_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every outermost balanced ``[[...]]`` in ``text``."""
    spans = []
    depth = start = 0
    for match in re.finditer(r"\[\[|\]\]", text):
        if match.group() == "[[":
            if depth == 0:
                start = match.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                spans.append((start, match.end()))
    return spans


def replace_links(text: str) -> str:
    """``[[target|shown]]`` -> shown, ``[[target]]`` -> target; files and categories go."""
    out = []
    position = 0
    while True:
        start = text.find("[[", position)
        if start < 0:
            out.append(text[position:])
            break
        out.append(text[position:start])
        depth = 0
        end = None
        for match in re.finditer(r"\[\[|\]\]", text[start:]):
            depth += 1 if match.group() == "[[" else -1
            if depth == 0:
                end = start + match.end()
                break
        if end is None:
            position = start + 2
            continue
        inner = replace_links(text[start + 2 : end - 2])
        out.append(_link_text(inner))
        position = end
    text = "".join(out)
    text = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", text)
    return re.sub(r"\[(?:https?:)?//[^\s\]]+\]", "", text)
