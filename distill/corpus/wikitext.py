"""WikiSource wikitext of the 1911 Britannica to plain article text.

An article page on WikiSource holds almost no text: it transcludes sections of scanned pages,
``<pages index="EB1911 - Volume 01.djvu" from=42 to=43 fromsection=s3 tosection=s1 />``. So
``assemble_article`` first cuts those sections out of the stored ``Page:`` wikitext (running
headers and footers live in ``<noinclude>`` and go), joins the pages (a word hyphenated across a
page break with ``{{hws}}``/``{{hwe}}`` becomes one word again), and ``wikitext_to_text`` then turns
the markup into text: templates, links, bold/italic, tables, tags and entities. A missing
``Page:`` or a section name found on none of its pages is counted in :class:`ConvertStats` and,
when the caller passes a ``problems`` list, named there: such an article is cut short or runs on
into the next articles, and ``convert`` marks it incomplete.

The rule is that every word the page shows is kept. One documented way for each construct:

* footnotes: the ``<ref>`` marks go from the running text and each footnote's text becomes its
  own paragraph at the end of the article, in order of appearance; a named footnote reused with
  ``<ref name=x/>`` is kept once, and ``<ref follow=x>`` (a footnote running on over a page
  break) is joined to footnote ``x``. The Gutenberg reader does the same with its footnotes;
* tables (``{| ... |}`` and HTML ``<table>``): each row becomes one line, its cells' text joined
  by a single space; a caption is a line of its own. Attributes (``{{ts|...}}``, ``style=``,
  ``rowspan=``, ``colspan=``, ``align=``) go, and so does any ``|`` left in a cell (a drawn bond
  in a structural formula, ``&#124;``), so no table syntax is left in the text;
* ``<sup>``/``{{sup}}`` become ``^`` and ``<sub>``/``{{sub}}`` become ``_``, as in the Project
  Gutenberg text: ``10^6``, ``x^{12}`` (a superscript of more than one character is braced) and
  ``H_{2}O`` (a subscript is always braced, as PG writes ``C_{6}H_{5}``);
* ``<math>`` keeps its TeX source; a numbered equation ``{{ne||<math>...</math>|(2)}}`` becomes a
  line of its own, the equation then its number (``{{equation}}``, ``{{MathForm1}}`` alike);
* link templates show the word the page shows: ``{{EB1911 article link|Display|Target}}``,
  ``{{1911link|Display|Target}}`` and ``{{EB9 article link|Display}}`` show their first argument;
  ``{{EB1911 lkpl|Target|shown}}``, ``{{11link|Target|shown}}`` and the other ``lkpl`` links show
  their second argument when it is given, else the first;
* size-first templates (``{{hi|1em|TEXT}}``, ``{{hanging indent}}``, ``{{outdent}}``, ``{{dent}}``,
  ``{{Fs|108%|TEXT}}``...) drop their leading sizes and keep the text;
* a few templates render as the page does: ``{{lb-|330}}`` "330 lb.", ``{{...}}`` "...",
  ``{{dual line|a|b}}`` "a b", ``{{11co|51|30|N}}`` "51° 30′ N", fractions ``5 3/7`` or ``½``;
* an unknown template keeps the text it carries: its positional arguments that are not sizes,
  styles, URLs or file names, and its ``text=`` (``content=``, ``caption=``) arguments; it is
  counted in ``ConvertStats.unknown_templates``;
* dropped on purpose, as page furniture: images and their captions, shoulder headings (marginal
  notes), running headers, the author's initials at an article's end (``{{EB1911 footer
  initials}}``, as the Gutenberg reader drops ``(K. S.)``) and ``<score>`` music notation
  (counted in ``ConvertStats.scores``).
"""
from __future__ import annotations

import collections
import html
import re
from dataclasses import dataclass, field

HARD_BREAK = "\x1e"  # a line break that survives paragraph joining (poems, <br>, table rows)
FRACTION_JOIN = "\x1f"
MAX_PAGES_PER_TAG = 300  # a <pages> tag without bounds would transclude a whole volume

_ATTR = re.compile(r"""([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s/>]+))""")
_PAGES_TAG = re.compile(r"<pages\b([^>]*?)/?>(?:\s*</pages>)?", re.IGNORECASE)
_NOINCLUDE = re.compile(r"<noinclude>.*?(?:</noinclude>|$)", re.IGNORECASE | re.DOTALL)
_SECTION_TAG = re.compile(r"""<section\s+(begin|end)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s/>]+))\s*/?>(?:\s*</section>)?""", re.IGNORECASE)
_VOLUME = re.compile(r"volume\s*0*(\d+)", re.IGNORECASE)


@dataclass
class ConvertStats:
    """What a conversion met that a user may want to know about."""

    unknown_templates: collections.Counter = field(default_factory=collections.Counter)
    missing_pages: int = 0
    missing_sections: int = 0
    tables: int = 0  # wiki and HTML tables rendered as rows of cell text
    footnotes: int = 0  # footnotes moved to the end of their article
    scores: int = 0  # <score> music notation blocks dropped


def _attrs(text: str) -> dict[str, str]:
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
        attrs = _attrs(match.group(1))
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
        chunks.append(_SECTION_TAG.sub("", text[start:stop]))
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


# Templates ---------------------------------------------------------------------------------

def _norm_name(name: str) -> str:
    name = re.sub(r"[\s_]+", " ", name).strip().lower()
    return name[len("template:"):].strip() if name.startswith("template:") else name


# Templates whose first positional argument is the text they show (formatting wrappers).
_FIRST_ARG = {
    "sc", "small-caps", "smallcaps", "small caps", "asc", "csc", "sm", "smaller", "small", "x-smaller", "xx-smaller",
    "larger", "large", "x-larger", "xx-larger", "big", "nowrap", "nobr", "no wrap", "greek", "polytonic", "grc",
    "center", "c", "centre", "block center", "bc", "block centre", "fine block", "fine", "font", "right", "left", "float right",
    "float left", "eb1911 fine print", "eb1911 fine", "abbr", "sic", "u", "underline", "overline", "di",
    "dropinitial", "drop initial", "italic", "bold", "expand", "hebrew", "lang-el",
    "fs85", "fs90", "fs75", "fs70", "smaller block", "sm block", "small block", "blockquote", "quote", "nop-text",
    "ditto mark", "sans-serif", "serif", "strikethrough", "s", "tooltip", "blackletter", "main other", "nodent",
}
# Templates that show nothing worth keeping (page furniture, layout, images, marginal notes).
_DROP = {
    "eb1911 page heading", "rh", "runningheader", "running header", "ts", "table style", "clear", "smallrefs", "reflist",
    "references", "eb1911 fine print/s", "eb1911 fine print/e", "eb1911 footer initials", "eb1911 footer", "img float",
    "figure", "raw image", "css image crop", "missing image", "missing table", "plate", "anchor", "anchor+", "section",
    "pline", "hr", "rule", "bar", "brace", "brace2", "***", "nopt", "ppoem", "authority control", "eb1911", "header",
    "eb1911 header", "textquality", "pd-old", "pd/1923", "gap", "em", "dhr", "nop", "shy",
}
# Templates whose leading arguments are sizes (an indent, a font size, an angle), then the text.
_SIZE_FIRST = {
    "hi", "hanging indent", "outdent", "dent", "ti", "text indent", "indent", "margin-left", "ml", "pad", "rotate",
    "size", "fs", "font-size", "font size", "fsize",
}
_VULGAR = {("1", "2"): "½", ("1", "3"): "⅓", ("2", "3"): "⅔", ("1", "4"): "¼", ("3", "4"): "¾", ("1", "5"): "⅕", ("1", "6"): "⅙", ("1", "8"): "⅛", ("3", "8"): "⅜", ("5", "8"): "⅝", ("7", "8"): "⅞"}
_SPACE_TEMPLATES = {"gap", "em", "en", "thinsp", "nbsp", "spaces", "ensp", "emsp"}
_BREAK_TEMPLATES = {"dhr", "nop", "br", "brs"}
_ESCAPES = {"!": "|", "pipe": "|", "=": "=", "'": "'", "...": "...", "…": "...", ". . .": "..."}
# {{EB1911 article link|Display|Target}}: the page shows the first argument.
_DISPLAY_FIRST_LINKS = {"eb1911 article link", "1911link", "eb9 article link", "ce article link"}
# {{EB1911 lkpl|Target|shown}}: the page shows the second argument when given, else the target.
_TARGET_FIRST_LINKS = {
    "eb1911 lkpl", "11link", "eb1911 link", "eb1911 lkp", "ebl", "lkpl", "dnb lkpl", "eb9 lkpl", "ce lkpl", "9link",
    "eb9link", "1911 article link",
}
_FRACTIONS = {"frac", "sfrac", "tfrac", "eb1911 tfrac", "eb1911 sfrac", "fraction", "over"}
_UNITS = {"lb": "lb.", "lb-": "lb.", "lb.": "lb."}  # {{lb-|330}}: "330 lb."
_COORDINATES = {"11co", "eb1911 coordinates"}
_EQUATIONS = {"ne", "equation", "mathform1"}

_NUMBER = r"[-+−]?(?:\d+(?:\.\d*)?|\.\d+)"
_SIZE = re.compile(rf"^{_NUMBER}\s*(?:em|en|ex|px|pt|pc|%|rem|vw|vh|cm|mm|in|ch|deg)?$", re.IGNORECASE)
_UNIT_SIZE = re.compile(rf"^{_NUMBER}\s*(?:em|en|ex|px|pt|pc|%|rem|vw|vh|cm|mm|ch|deg)$", re.IGNORECASE)
_SIZE_WORDS = {"xx-small", "x-small", "small", "medium", "large", "x-large", "xx-large", "smaller", "larger", "xs", "s", "m", "l", "xl", "xxl"}
# CSS declarations ("width:390px", "border: 1px solid"); a value is one token or starts with a digit,
# so text such as "Left: the king" is not taken for a style.
_CSS = re.compile(
    r"^(?:(?:width|height|margin|padding|font|text|line|color|background|border|float|vertical|display|white-space"
    r"|letter-spacing|word-spacing|clear|position|top|left|right|bottom)[\w-]*\s*:\s*(?:[^;:\s]+|\d[^;:]*)\s*;?\s*)+$",
    re.IGNORECASE,
)
_URL = re.compile(r"^(?:[a-z]+:)?//\S+$", re.IGNORECASE)
_FILE_NAME = re.compile(r"\.(?:png|jpe?g|gif|svg|tiff?|djvu|pdf|webp)$", re.IGNORECASE)
_TEXT_NAMED_ARGS = ("text", "content", "caption", "display")


def _is_text_arg(arg: str) -> bool:
    """Whether an argument of an unknown template is text the page shows (not a size or style)."""
    arg = arg.strip()
    return bool(arg) and not (_UNIT_SIZE.match(arg) or _CSS.match(arg) or _URL.match(arg) or _FILE_NAME.search(arg))


def _without_leading_sizes(positional: list[str]) -> list[str]:
    args = list(positional)
    while len(args) > 1 and (not args[0].strip() or _SIZE.match(args[0].strip()) or args[0].strip().lower() in _SIZE_WORDS):
        args.pop(0)
    if len(args) == 1 and _UNIT_SIZE.match(args[0].strip()):
        return []
    return args


def _first_text(args: list[str]) -> str:
    return next((arg for arg in args if arg.strip()), "")


def _coordinate(positional: list[str]) -> str:
    """{{11co|51|30|N}} -> 51° 30′ N (degrees, minutes, seconds, then the direction)."""
    parts = [p.strip() for p in positional if p.strip()]
    direction = parts.pop() if parts and not re.match(r"^[\d.]+$", parts[-1]) else ""
    shown = [number + mark for number, mark in zip(parts, ("°", "′", "″"))]
    return " ".join(shown + ([direction] if direction else []))


def _equation(key: str, positional: list[str], named: dict[str, str]) -> str:
    """A numbered equation as a line of its own: lead-in text, the equation, its number."""
    if key == "ne":  # {{ne|lead-in|equation|(2)}}; a lone argument is the equation
        parts = positional if len(positional) > 1 else [""] + positional
    elif key == "mathform1":  # {{MathForm1|(2)|equation}}
        parts = ["", positional[1] if len(positional) > 1 else "", positional[0] if positional else ""]
    else:  # {{equation|equation|tag=(2)}}
        parts = ["", " ".join(positional), named.get("tag", "")]
    line = " ".join(part.strip() for part in parts[:3] if part.strip())
    return f"{HARD_BREAK}{line}{HARD_BREAK}" if line else ""


def _render(name: str, positional: list[str], named: dict[str, str], stats: ConvertStats) -> str:
    key = _norm_name(name)
    if key in _ESCAPES:
        return _ESCAPES[key]
    if key in _SPACE_TEMPLATES:
        return " "
    if key in _BREAK_TEMPLATES:
        return "\n\n"
    if key in ("hws", "hyphenated word start"):
        return positional[1] if len(positional) > 1 else (positional[0] if positional else "")
    if key in ("hwe", "hyphenated word end"):
        return "" if len(positional) > 1 else (positional[0] if positional else "")
    if key in _DISPLAY_FIRST_LINKS:
        return _first_text(positional)
    if key in _TARGET_FIRST_LINKS:
        return _first_text(positional[1:]) or (positional[0] if positional else "")
    if key in _FRACTIONS:
        parts = [p.strip() for p in positional]
        whole = parts.pop(0) + " " if len(parts) == 3 else ""
        numerator, denominator = (parts if len(parts) == 2 else ["1", parts[0]]) if parts else ("", "")
        vulgar = _VULGAR.get((numerator, denominator))
        # FRACTION_JOIN becomes a space after a digit ("5 3/7") and nothing elsewhere.
        return whole + (vulgar if vulgar else f"{FRACTION_JOIN}{numerator}/{denominator}")
    if key in _EQUATIONS:
        return _equation(key, positional, named)
    if key in ("sup", "sub"):  # one rule for the tag and the template, applied in wikitext_to_text
        text = _first_text(positional)
        return f"<{key}>{text}</{key}>" if text else ""
    if key in _UNITS:
        number = _first_text(positional).strip()
        return f"{number} {_UNITS[key]}" if number else _UNITS[key]
    if key in _COORDINATES:
        return _coordinate(positional)
    if key in ("dual line", "dual"):  # two stacked lines of one cell, read one after the other
        return " ".join(arg.strip() for arg in positional if arg.strip())
    if key in ("fqm", "float quote mark"):
        return positional[0] if positional else '"'
    if key == "ditto":
        return '"'
    if key in ("ae", "oe"):
        return {"ae": "æ", "oe": "œ"}[key]
    if key in _SIZE_FIRST:
        return " ".join(arg for arg in _without_leading_sizes(positional) if arg.strip()) or named.get("text", "")
    if key in ("lang", "langi"):
        return positional[1] if len(positional) > 1 else ""
    if key in ("color", "colour", "font color"):
        return positional[-1] if positional else ""
    if key in ("uc", "upper"):
        return positional[0].upper() if positional else ""
    if key in ("lc", "lower"):
        return positional[0].lower() if positional else ""
    if key in _FIRST_ARG:
        if positional:
            return positional[0]
        return named.get("text", named.get("1", ""))
    if key in _DROP or key.startswith("eb1911 shoulder heading") or key.startswith("#"):
        return ""
    # Unknown: never lose the words it carries.
    stats.unknown_templates[key] += 1
    kept = [arg.strip() for arg in positional if _is_text_arg(arg)]
    kept += [named[name].strip() for name in _TEXT_NAMED_ARGS if _is_text_arg(named.get(name, ""))]
    return " ".join(kept)


_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\[\[|\]\]|\|")
_NAMED_ARG = re.compile(r"^\s*([\w -]{1,40}?)\s*=(.*)$", re.DOTALL)


def _parse_template(text: str, start: int) -> tuple[int, list[str]] | None:
    """Split the template opening at ``start`` into its top-level parts; None if unbalanced."""
    depth_template = depth_link = 0
    parts = []
    part_start = start + 2
    for match in _TEMPLATE_TOKEN.finditer(text, start + 2):
        token = match.group()
        if token == "{{":
            depth_template += 1
        elif token == "}}":
            if depth_template == 0:
                parts.append(text[part_start : match.start()])
                return match.end(), parts
            depth_template -= 1
        elif token == "[[":
            depth_link += 1
        elif token == "]]":
            depth_link = max(0, depth_link - 1)
        elif depth_template == 0 and depth_link == 0:
            parts.append(text[part_start : match.start()])
            part_start = match.end()
    return None


def expand_templates(text: str, stats: ConvertStats | None = None) -> str:
    """Replace every ``{{template|...}}`` by the text it shows (see ``_render``)."""
    stats = stats if stats is not None else ConvertStats()
    out = []
    position = 0
    while True:
        start = text.find("{{", position)
        if start < 0:
            out.append(text[position:])
            return "".join(out)
        out.append(text[position:start])
        parsed = _parse_template(text, start)
        if parsed is None:  # unbalanced braces: drop the stray opener
            position = start + 2
            continue
        end, parts = parsed
        name = expand_templates(parts[0], stats)
        numbered: dict[int, str] = {}
        named: dict[str, str] = {}
        for part in parts[1:]:
            match = _NAMED_ARG.match(part)
            if match is None:
                numbered[len(numbered) + 1] = expand_templates(part, stats)
            elif match.group(1).strip().isdigit():
                numbered[int(match.group(1).strip())] = expand_templates(match.group(2), stats)
            else:
                named[match.group(1).strip().lower()] = expand_templates(match.group(2), stats)
        positional = [numbered.get(i, "") for i in range(1, max(numbered, default=0) + 1)]
        out.append(_render(name, positional, named, stats))
        position = end


# Links, tables, tags -------------------------------------------------------------------------

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


def _link_spans(text: str) -> list[tuple[int, int]]:
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
    for start, end in _link_spans(text):
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


def _wikitable_to_text(text: str, stats: ConvertStats) -> str:
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


_SCRIPT = re.compile(r"<(sup|sub)\b[^>]*>((?:(?!<su[bp]\b).)*?)</\1\s*>", re.IGNORECASE | re.DOTALL)


def _script(match: re.Match) -> str:
    """``<sup>6</sup>`` -> ``^6``, ``<sup>12</sup>`` -> ``^{12}``, ``<sub>2</sub>`` -> ``_{2}``."""
    inner = match.group(2).strip()
    shown = html.unescape(_TAG.sub("", inner)).strip()
    if not shown:
        return ""
    if match.group(1).lower() == "sup":
        return "^" + inner if len(shown) == 1 and "\x02" not in inner else "^{" + inner + "}"
    return "_{" + inner + "}"


_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_REF = re.compile(r"<ref\b([^>]*?)(?:/>|>(.*?)(?:</ref\s*>|$))", re.IGNORECASE | re.DOTALL)


def _take_footnotes(text: str) -> tuple[str, list[str]]:
    """The text without its ``<ref>`` marks, and each footnote's wikitext in order of appearance."""
    notes: list[str] = []
    named: dict[str, int] = {}

    def _take(match: re.Match) -> str:
        attrs = _attrs(match.group(1))
        content = match.group(2)
        if content is None or not content.strip():  # <ref name=x/>: a reuse, shown once
            return ""
        follow, name = attrs.get("follow"), attrs.get("name")
        if follow in named:
            notes[named[follow]] += "\n" + content
        elif name not in named:
            if name or follow:
                named[name or follow] = len(notes)
            notes.append(content)
        return ""

    return _REF.sub(_take, text), notes


def wikitext_to_text(wikitext: str, stats: ConvertStats | None = None) -> str:
    """Plain text with paragraphs separated by single newlines, footnotes last (see the module docstring)."""
    stats = stats if stats is not None else ConvertStats()
    text = wikitext.replace("\r\n", "\n")
    text = re.sub(r"<!--.*?(?:-->|$)", "", text, flags=re.DOTALL)
    text = _NOINCLUDE.sub("", text)
    text, scores = re.subn(r"<score\b[^>]*?(?:/>|>.*?(?:</score\s*>|$))", "", text, flags=re.IGNORECASE | re.DOTALL)
    stats.scores += scores
    text, notes = _take_footnotes(text)
    stats.footnotes += len(notes)
    paragraphs_ = [_to_text(text, stats)] + [_to_text(note, stats) for note in notes]
    return "\n".join(p for p in paragraphs_ if p)


def _to_text(text: str, stats: ConvertStats) -> str:
    text = re.sub(r"<references\b[^>]*/?>(?:\s*</references>)?", "", text, flags=re.IGNORECASE)
    text = _SECTION_TAG.sub("", text)
    text = re.sub(r"<pagequality\b[^>]*/?>", "", text, flags=re.IGNORECASE)
    stats.tables += len(re.findall(r"<table\b", text, flags=re.IGNORECASE))

    # <math> and <nowiki> content is literal: keep it out of the template and link parsers.
    literals: list[str] = []

    def _protect(match: re.Match) -> str:
        literals.append(match.group(1))
        return f"\x02{len(literals) - 1}\x03"

    text = re.sub(r"<math\b[^>]*>(.*?)</math>", _protect, text, flags=re.IGNORECASE | re.DOTALL)
    text = re.sub(r"<(?:nowiki|chem)\b[^>]*>(.*?)</(?:nowiki|chem)>", _protect, text, flags=re.IGNORECASE | re.DOTALL)
    text = re.sub(
        r"<poem\b[^>]*>(.*?)</poem>",
        lambda m: HARD_BREAK + m.group(1).strip("\n").replace("\n", HARD_BREAK) + HARD_BREAK,
        text,
        flags=re.IGNORECASE | re.DOTALL,
    )
    text = expand_templates(text, stats)
    text = _wikitable_to_text(text, stats)
    text = replace_links(text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"(?m)^(=+)\s*(.*?)\s*\1\s*$", lambda m: "\n" + m.group(2) + "\n", text)
    text = re.sub(r"(?m)^[*#:;]+\s*", "", text)
    text = re.sub(r"(?m)^-{4,}\s*$", "", text)
    text = re.sub(r"__[A-Z]+__", "", text)
    while True:  # innermost first: <sub> inside <sup>
        text, count = _SCRIPT.subn(_script, text)
        if not count:
            break
    text = re.sub(r"<br\s*/?\s*>|</?tr\b[^>]*>|</(?:p|div|li|h[1-6]|table|center|blockquote)>", HARD_BREAK, text, flags=re.IGNORECASE)
    text = re.sub(r"<t[dh]\b[^>]*>", " ", text, flags=re.IGNORECASE)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = re.sub(r"\x02(\d+)\x03", lambda m: literals[int(m.group(1))], text)
    text = re.sub(r"(?<=\d)" + FRACTION_JOIN, " ", text).replace(FRACTION_JOIN, "")
    return paragraphs(text)


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
