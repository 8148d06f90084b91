"""WikiSource transclusion: an article's ``<pages>`` tags to the wikitext of the sections they show.

An article page transcludes sections of scanned ``Page:`` pages; :func:`assemble_article` cuts
them out (running headers and footers in ``<noinclude>`` go) and joins them as a reader sees them
(see :mod:`distill.corpus.wikitext` for the whole conversion).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from distill.corpus.wikitext_stats import ConvertStats

MAX_PAGES_PER_TAG = 300  # a <pages> tag without bounds would transclude a whole volume

_ATTR = re.compile(r"""([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s/>]+))""")
_PAGES_TAG = re.compile(r"<pages\b([^>]*?)/?>(?:\s*</pages>)?", re.IGNORECASE)
_NOINCLUDE = re.compile(r"<noinclude>.*?(?:</noinclude>|$)", re.IGNORECASE | re.DOTALL)
_SECTION_TAG = re.compile(r"""<section\s+(begin|end)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s/>]+))\s*/?>(?:\s*</section>)?""", re.IGNORECASE)
_VOLUME = re.compile(r"volume\s*0*(\d+)", re.IGNORECASE)


def tag_attrs(text: str) -> dict[str, str]:
    """The ``name=value`` attributes of a tag's text (quoted or not), names lower-cased."""
    return {m.group(1).lower(): next(g for g in m.groups()[1:] if g is not None) for m in _ATTR.finditer(text)}


def _page_numbers(attrs: dict[str, str]) -> list[int]:
    numbers: list[int] = []
    if "from" in attrs or "to" in attrs:
        try:
            start = int(attrs.get("from") or attrs.get("to"))
            end = int(attrs.get("to") or start)
        except ValueError:
            return []
        numbers.extend(range(start, min(end, start + MAX_PAGES_PER_TAG - 1) + 1))
    for part in attrs.get("include", "").split(","):
        part = part.strip()
        if re.fullmatch(r"\d+", part):
            numbers.append(int(part))
        elif re.fullmatch(r"\d+\s*-\s*\d+", part):
            a, b = (int(x) for x in part.split("-"))
            numbers.extend(range(a, min(b, a + MAX_PAGES_PER_TAG - 1) + 1))
    excluded = {int(p) for p in re.findall(r"\d+", attrs.get("exclude", ""))}
    return sorted(n for n in set(numbers) if n not in excluded)


@dataclass
class PagesTag:
    """One ``<pages .../>`` transclusion: the index, its page numbers and section bounds."""

    index: str
    numbers: list[int]
    fromsection: str | None = None
    tosection: str | None = None
    onlysection: str | None = None

    def page_titles(self) -> list[str]:
        return [f"Page:{self.index}/{n}" for n in self.numbers]


def parse_pages_tags(wikitext: str) -> list[PagesTag]:
    """Every ``<pages>`` tag of an article's wikitext, in order."""
    tags = []
    for match in _PAGES_TAG.finditer(wikitext):
        attrs = tag_attrs(match.group(1))
        index = attrs.get("index", "").strip()
        if index.lower().startswith("index:"):
            index = index[len("index:"):]
        if not index:
            continue
        tags.append(PagesTag(index, _page_numbers(attrs), attrs.get("fromsection"), attrs.get("tosection"), attrs.get("onlysection")))
    return tags


def page_titles(wikitext: str) -> list[str]:
    """The ``Page:`` titles an article transcludes, without repeats, in order."""
    return list(dict.fromkeys(title for tag in parse_pages_tags(wikitext) for title in tag.page_titles()))


def volume_of(wikitext: str) -> int | None:
    """The volume number named by the first ``<pages index=...>`` tag, if any."""
    for tag in parse_pages_tags(wikitext):
        match = _VOLUME.search(tag.index)
        if match:
            return int(match.group(1))
    return None


def _section_bounds(text: str, name: str) -> tuple[int | None, int | None]:
    """(end of the begin marker, start of the end marker) of section ``name`` in ``text``."""
    begin = end = None
    for match in _SECTION_TAG.finditer(text):
        value = next(g for g in match.groups()[1:] if g is not None).strip()
        if value != name.strip():
            continue
        if match.group(1).lower() == "begin" and begin is None:
            begin = match.end()
        elif match.group(1).lower() == "end":
            end = match.start()
    return begin, end


def page_body(raw: str) -> str:
    """A Page: wikitext without its ``<noinclude>`` header/footer."""
    return _NOINCLUDE.sub("", raw)


def strip_section_tags(text: str) -> str:
    """``text`` without its ``<section begin=.../>`` and ``<section end=.../>`` markers."""
    return _SECTION_TAG.sub("", text)


def transclude(tag: PagesTag, pages: dict[str, str | None], stats: ConvertStats | None = None, problems: list[str] | None = None) -> str:
    """The wikitext a ``<pages>`` tag shows: the selected sections of each page, joined.

    A missing page, or a section name found on none of the page's markers, is counted in
    ``stats`` and described in ``problems``: the article it belongs to is then cut short or,
    when a ``tosection`` is not found, runs on into the rest of its last page.
    """
    stats = stats if stats is not None else ConvertStats()
    problems = problems if problems is not None else []
    chunks = []
    first, last = (tag.numbers[0], tag.numbers[-1]) if tag.numbers else (None, None)
    for number, title in zip(tag.numbers, tag.page_titles()):
        raw = pages.get(title)
        if raw is None:
            stats.missing_pages += 1
            problems.append(f"missing page {title}")
            continue
        text = page_body(raw)
        start, stop = 0, len(text)
        if tag.onlysection:
            begin, end = _section_bounds(text, tag.onlysection)
            if begin is None and end is None:
                stats.missing_sections += 1
                problems.append(f"section {tag.onlysection!r} not on {title}")
                continue
            start, stop = begin or 0, end if end is not None else len(text)
        else:
            if number == first and tag.fromsection:
                begin, _ = _section_bounds(text, tag.fromsection)
                if begin is None:
                    stats.missing_sections += 1
                    problems.append(f"section {tag.fromsection!r} not on {title}")
                    continue
                start = begin
            if number == last and tag.tosection:
                # Bounds on the whole page: an unclosed section runs to the page's end, as on WikiSource.
                begin, end = _section_bounds(text, tag.tosection)
                if end is not None and end >= start:
                    stop = end
                elif begin is None:
                    stats.missing_sections += 1
                    problems.append(f"section {tag.tosection!r} not on {title}")
        chunks.append(strip_section_tags(text[start:stop]))
    return join_pages(chunks)


_NOP_END = re.compile(r"\{\{\s*nop\s*\}\}\s*$", re.IGNORECASE)


def join_pages(chunks: list[str]) -> str:
    """Join page texts as a reader sees them: one running paragraph unless a page ends with
    ``{{nop}}`` (a paragraph break); a trailing hyphen joins the next page without a space."""
    out = ""
    for chunk in chunks:
        chunk = chunk.strip()
        if not chunk:
            continue
        if not out:
            out = chunk
        elif _NOP_END.search(out):
            out = _NOP_END.sub("", out).rstrip() + "\n\n" + chunk
        elif out.endswith("-") and not out.endswith("--"):
            out += chunk
        else:
            out += " " + chunk
    return _NOP_END.sub("", out)


def assemble_article(wikitext: str, pages: dict[str, str | None], stats: ConvertStats | None = None, problems: list[str] | None = None) -> str:
    """The article's own wikitext with each ``<pages>`` tag replaced by what it transcludes.

    Only the transcluded text is kept when the article has ``<pages>`` tags: what surrounds them
    is the header template (previous/next article, volume), categories and licence notes. What
    made the article incomplete is appended to ``problems`` (see :func:`transclude`).
    """
    stats = stats if stats is not None else ConvertStats()
    tags = parse_pages_tags(wikitext)
    if not tags:
        return wikitext
    return "\n\n".join(transclude(tag, pages, stats, problems) for tag in tags)
