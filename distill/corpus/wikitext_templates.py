"""WikiSource templates (``{{name|arg|key=value}}``) to the text they show.

One documented rule per kind of template (links, sizes, fractions, equations, unknown ones) is
listed in :mod:`distill.corpus.wikitext`; :func:`expand_templates` applies them, innermost first.
"""
from __future__ import annotations

import re

from distill.corpus.paragraphs import HARD_BREAK
from distill.corpus.wikitext_stats import ConvertStats

FRACTION_JOIN = "\x1f"  # before a fraction made from a template; wikitext_to_text resolves it


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
