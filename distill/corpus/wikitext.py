"""WikiSource wikitext of the 1911 Britannica to plain article text.

An article page on WikiSource holds almost no text: it transcludes sections of scanned pages,
``<pages index="EB1911 - Volume 01.djvu" from=42 to=43 fromsection=s3 tosection=s1 />``. So
``assemble_article`` first cuts those sections out of the stored ``Page:`` wikitext (running
headers and footers live in ``<noinclude>`` and go), joins the pages (a word hyphenated across a
page break with ``{{hws}}``/``{{hwe}}`` becomes one word again), and ``wikitext_to_text`` then turns
the markup into text: templates, links, bold/italic, tags and entities. Footnotes (``<ref>``) are
always dropped; ``<math>`` keeps its TeX source; images, shoulder headings (marginal notes) and
page furniture go.
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


def transclude(tag: PagesTag, pages: dict[str, str | None], stats: ConvertStats | None = None) -> str:
    """The wikitext a ``<pages>`` tag shows: the selected sections of each page, joined."""
    stats = stats if stats is not None else ConvertStats()
    chunks = []
    first, last = (tag.numbers[0], tag.numbers[-1]) if tag.numbers else (None, None)
    for number, title in zip(tag.numbers, tag.page_titles()):
        raw = pages.get(title)
        if raw is None:
            stats.missing_pages += 1
            continue
        text = page_body(raw)
        if tag.onlysection:
            begin, end = _section_bounds(text, tag.onlysection)
            if begin is None and end is None:
                stats.missing_sections += 1
                continue
            text = text[begin or 0 : end if end is not None else len(text)]
        else:
            if number == first and tag.fromsection:
                begin, _ = _section_bounds(text, tag.fromsection)
                if begin is None:
                    stats.missing_sections += 1
                    continue
                text = text[begin:]
            if number == last and tag.tosection:
                _, end = _section_bounds(text, tag.tosection)
                if end is None:
                    stats.missing_sections += 1
                else:
                    text = text[:end]
        chunks.append(_SECTION_TAG.sub("", text))
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


def assemble_article(wikitext: str, pages: dict[str, str | None], stats: ConvertStats | None = None) -> str:
    """The article's own wikitext with each ``<pages>`` tag replaced by what it transcludes.

    Only the transcluded text is kept when the article has ``<pages>`` tags: what surrounds them
    is the header template (previous/next article, volume), categories and licence notes.
    """
    stats = stats if stats is not None else ConvertStats()
    tags = parse_pages_tags(wikitext)
    if not tags:
        return wikitext
    return "\n\n".join(transclude(tag, pages, stats) for tag in tags)


# Templates ---------------------------------------------------------------------------------

def _norm_name(name: str) -> str:
    name = re.sub(r"[\s_]+", " ", name).strip().lower()
    return name[len("template:"):].strip() if name.startswith("template:") else name


# Templates whose first positional argument is the text they show (formatting wrappers).
_FIRST_ARG = {
    "sc", "small-caps", "smallcaps", "small caps", "asc", "csc", "sm", "smaller", "small", "x-smaller", "xx-smaller",
    "larger", "large", "x-larger", "xx-larger", "big", "nowrap", "nobr", "no wrap", "greek", "polytonic", "grc",
    "center", "c", "centre", "block center", "bc", "block centre", "fine block", "fine", "font", "right", "left", "float right",
    "float left", "eb1911 fine print", "eb1911 fine", "abbr", "sic", "u", "underline", "overline", "sup", "sub", "di",
    "dropinitial", "drop initial", "italic", "bold", "expand", "hebrew", "lang-el", "hi", "hanging indent", "outdent",
    "fs85", "fs90", "fs75", "fs70", "smaller block", "sm block", "small block", "blockquote", "quote", "nop-text",
    "ditto mark", "sans-serif", "serif", "strikethrough", "s",
}
# Templates that show nothing worth keeping (page furniture, layout, images, marginal notes).
_DROP = {
    "eb1911 page heading", "rh", "runningheader", "running header", "ts", "clear", "smallrefs", "reflist", "references",
    "eb1911 fine print/s", "eb1911 fine print/e", "eb1911 footer initials", "eb1911 footer", "img float", "figure",
    "raw image", "css image crop", "missing image", "plate", "anchor", "anchor+", "pline", "dent", "hr", "rule",
    "nopt", "ppoem", "authority control", "eb1911", "header", "eb1911 header", "textquality", "pd-old", "pd/1923",
    "gap", "em", "dhr", "nop",
}
_VULGAR = {("1", "2"): "½", ("1", "3"): "⅓", ("2", "3"): "⅔", ("1", "4"): "¼", ("3", "4"): "¾", ("1", "5"): "⅕", ("1", "6"): "⅙", ("1", "8"): "⅛", ("3", "8"): "⅜", ("5", "8"): "⅝", ("7", "8"): "⅞"}
_SPACE_TEMPLATES = {"gap", "em", "en", "thinsp", "nbsp", "spaces", "ensp", "emsp"}
_BREAK_TEMPLATES = {"dhr", "nop", "br", "brs"}
_LINK_TEMPLATES = {"eb1911 lkpl", "eb1911 article link", "1911link", "11link", "eb1911 link", "eb1911 lkp", "ebl", "lkpl"}


def _render(name: str, positional: list[str], named: dict[str, str], stats: ConvertStats) -> str:
    key = _norm_name(name)
    if key in ("!", "pipe"):
        return "|"
    if key == "=":
        return "="
    if key in _SPACE_TEMPLATES:
        return " "
    if key in _BREAK_TEMPLATES:
        return "\n\n"
    if key in ("hws", "hyphenated word start"):
        return positional[1] if len(positional) > 1 else (positional[0] if positional else "")
    if key in ("hwe", "hyphenated word end"):
        return "" if len(positional) > 1 else (positional[0] if positional else "")
    if key in _LINK_TEMPLATES:
        # {{EB1911 article link|Target|shown text}}; the shown text defaults to the target.
        if len(positional) > 1 and positional[1].strip():
            return positional[1]
        return positional[0] if positional else ""
    if key in ("frac", "sfrac", "tfrac", "eb1911 tfrac", "fraction"):
        parts = [p.strip() for p in positional]
        whole = parts.pop(0) + " " if len(parts) == 3 else ""
        numerator, denominator = (parts if len(parts) == 2 else ["1", parts[0]]) if parts else ("", "")
        vulgar = _VULGAR.get((numerator, denominator))
        # FRACTION_JOIN becomes a space after a digit ("5 3/7") and nothing elsewhere.
        return whole + (vulgar if vulgar else f"{FRACTION_JOIN}{numerator}/{denominator}")
    if key in ("fqm", "float quote mark"):
        return positional[0] if positional else '"'
    if key == "ditto":
        return '"'
    if key in ("ae", "oe"):
        return {"ae": "æ", "oe": "œ"}[key]
    if key in ("fs", "font-size", "font size", "fsize"):  # {{Fs|108%|text}}
        return positional[1] if len(positional) > 1 else ""
    if key in ("lang", "langi"):
        return positional[1] if len(positional) > 1 else ""
    if key in ("color", "colour", "font color"):
        return positional[-1] if positional else ""
    if key in ("uc", "upper"):
        return positional[0].upper() if positional else ""
    if key in ("lc", "lower"):
        return positional[0].lower() if positional else ""
    if key in ("sic",):
        return positional[0] if positional else ""
    if key in _FIRST_ARG:
        if positional:
            return positional[0]
        return named.get("text", named.get("1", ""))
    if key in _DROP or key.startswith("eb1911 shoulder heading") or key.startswith("#"):
        return ""
    stats.unknown_templates[key] += 1
    return ""


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


def _wikitable_to_text(text: str) -> str:
    """Wikitable rows become lines, cells are joined with spaces, attributes dropped."""
    out = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("{|", "|}", "|-", "|+")):
            out.append(HARD_BREAK)
            continue
        if stripped.startswith(("|", "!")):
            cells = re.split(r"\|\||!!", stripped[1:])
            texts = []
            for cell in cells:
                # "style=... | content": keep what follows the attribute part.
                if "|" in cell and "=" in cell.split("|", 1)[0]:
                    cell = cell.split("|", 1)[1]
                texts.append(cell.strip())
            out.append(" ".join(t for t in texts if t) + " ")
            continue
        out.append(line)
    return "\n".join(out)


_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")


def wikitext_to_text(wikitext: str, stats: ConvertStats | None = None) -> str:
    """Plain text with paragraphs separated by single newlines (see the module docstring)."""
    stats = stats if stats is not None else ConvertStats()
    text = wikitext.replace("\r\n", "\n")
    text = re.sub(r"<!--.*?(?:-->|$)", "", text, flags=re.DOTALL)
    text = _NOINCLUDE.sub("", text)
    text = re.sub(r"<ref\b[^>]*/>", "", text, flags=re.IGNORECASE)
    text = re.sub(r"<ref\b[^>]*>.*?(?:</ref>|$)", "", text, flags=re.IGNORECASE | re.DOTALL)
    text = re.sub(r"<references\b[^>]*/?>", "", text, flags=re.IGNORECASE)
    text = _SECTION_TAG.sub("", text)
    text = re.sub(r"<pagequality\b[^>]*/?>", "", text, flags=re.IGNORECASE)

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
    text = _wikitable_to_text(text)
    text = replace_links(text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"(?m)^(=+)\s*(.*?)\s*\1\s*$", lambda m: "\n" + m.group(2) + "\n", text)
    text = re.sub(r"(?m)^[*#:;]+\s*", "", text)
    text = re.sub(r"(?m)^-{4,}\s*$", "", text)
    text = re.sub(r"__[A-Z]+__", "", text)
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
        joined = " ".join(line.strip() for line in block.split("\n"))
        for line in joined.split(HARD_BREAK):
            line = re.sub(r"\s+", " ", line).strip()
            if line:
                out.append(line)
    return "\n".join(out)
