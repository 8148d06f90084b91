"""WikiSource tables (``{| ... |}``) to text: one line per row, its cells' text joined by a space.

Attributes (``style=``, ``rowspan=``, ...) and separators go, and so does any ``|`` left in a cell;
nested tables are rendered into their cell (see :mod:`distill.corpus.wikitext`).
"""
from __future__ import annotations

import re

from distill.corpus.paragraphs import HARD_BREAK
from distill.corpus.wikitext_links import link_spans
from distill.corpus.wikitext_stats import ConvertStats

_TABLE_OPEN = re.compile(r"^:*\s*\{\|")
_PIPE_ENTITY = re.compile(r"&(?:#0*124|#[xX]0*7[cC]|vert|verbar|VerticalLine);?")
_ATTRIBUTES_ONLY = re.compile(
    r"""^\s*(?:(?:style|align|valign|colspan|rowspan|width|height|class|bgcolor|border|cellpadding|cellspacing|nowrap"""
    r"""|id|scope|dir|lang|title)\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"']+)\s*)+$""",
    re.IGNORECASE,
)


def _cell_text(text: str) -> str:
    """A cell's shown text: no attributes, and no ``|`` outside the links still to be replaced."""
    text = _PIPE_ENTITY.sub(" ", text)
    if _ATTRIBUTES_ONLY.match(text):
        return ""
    out, position = [], 0
    for start, end in link_spans(text):
        out.append(text[position:start].replace("|", " ") + text[start:end])
        position = end
    out.append(text[position:].replace("|", " "))
    return "".join(out).strip()


def _cell_content(cell: str) -> str:
    """MediaWiki's rule: ``attributes | content``, unless the part before the first ``|`` holds a link."""
    attributes, bar, content = cell.partition("|")
    return content if bar and "[[" not in attributes else cell


class _Table:
    """The rows of one wikitable being read; each cell a list of lines."""

    def __init__(self) -> None:
        self.caption: list[str] = []
        self.rows: list[list[list[str]]] = [[]]

    def add_cell(self, text: str) -> None:
        self.rows[-1].append([text])

    def add_line(self, line: str) -> None:
        if self.rows[-1]:
            self.rows[-1][-1].append(line)
        else:
            self.rows[-1].append([line])

    def render(self) -> str:
        lines = [_cell_text("\n".join(self.caption))]
        for row in self.rows:
            lines.append(" ".join(text for text in (_cell_text("\n".join(cell)) for cell in row) if text))
        return HARD_BREAK + HARD_BREAK.join(line for line in lines if line) + HARD_BREAK


def wikitables_to_text(text: str, stats: ConvertStats) -> str:
    """Each wikitable row becomes one line, its cells' text joined by a single space (nested tables
    are rendered into their cell); attributes and separators go."""
    out: list[str] = []
    tables: list[_Table] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if _TABLE_OPEN.match(stripped):  # the rest of the line is table attributes
            stats.tables += 1
            tables.append(_Table())
            continue
        if not tables:
            out.append(line)
            continue
        table = tables[-1]
        if stripped.startswith("|}"):
            rendered = tables.pop().render() + stripped[2:]
            if tables:
                tables[-1].add_line(rendered)
            else:
                out.append(rendered)
        elif stripped.startswith("|-"):
            table.rows.append([])
        elif stripped.startswith("|+"):
            table.caption.append(_cell_content(stripped[2:]))
        elif stripped.startswith(("|", "!")):
            cells = stripped[1:].replace("!!", "||") if stripped[0] == "!" else stripped[1:]
            for cell in cells.split("||"):
                table.add_cell(_cell_content(cell))
        else:
            table.add_line(line)
    while tables:  # a table left open (its end on a page not transcluded)
        rendered = tables.pop().render()
        if tables:
            tables[-1].add_line(rendered)
        else:
            out.append(rendered)
    return "\n".join(out)
