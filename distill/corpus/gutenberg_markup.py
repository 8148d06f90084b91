"""Project Gutenberg's inline markup to plain text: accent, Greek and symbol codes, bracketed
notes and transliterations, footnotes and italics (the rules are listed in :mod:`distill.corpus.gutenberg`).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable

_FOOTNOTES_HEADING = re.compile(r"^\s*FOOTNOTES?:\s*$", re.MULTILINE)
_FOOTNOTE_ENTRY = re.compile(r"^\s*\[(\d{1,3}|[a-z]|\*)\]\s+", re.MULTILINE)
_FOOTNOTE_REF = re.compile(r"\[\d{1,3}\]")
_ITALIC = re.compile(r"(?<![\w}\\])_(?=[^\s_{])((?:[^_\n]|\n(?!\n)){1,400}?)(?<=[^\s_])_(?![\w{])")
_STRAY_UNDERSCORE = re.compile(r"(?<![\w}])_+(?!\{)|(?<=\w)_+(?=[\s,.;:)!?]|$)")

_GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "zeta": "ζ", "eta": "η", "theta": "θ",
    "iota": "ι", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "omicron": "ο", "pi": "π", "rho": "ρ",
    "sigma": "σ", "tau": "τ", "upsilon": "υ", "phi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "varpi": "ϖ", "digamma": "ϝ", "stigma": "ϛ", "koppa": "ϟ", "vartheta": "ϑ", "varphi": "ϕ",
}
_SYMBOLS = {
    "root": "√", "sqrt": "√", "oo": "∞", "infinity": "∞", "int": "∫", "integral": "∫", "Integral": "∫",
    "nabla": "∇", "Nabla": "∇", "dP": "∂", "Pd": "∂", "flat": "♭", "sharp": "♯", "natural": "♮", "equiv": "≡",
    "equivalent": "≡", ">=": "≥", "<=": "≤", "=<": "≤", "/=": "≠", "+-": "±", "dagger": "†", "+": "†", "mars": "♂",
    "venus": "♀", "male": "♂", "female": "♀", "schwa": "ə", "gh": "ȝ", "Gh": "Ȝ", "GH": "Ȝ", "f": "f", "Sum": "∑",
    "sum": "∑", "×": "×", "oe": "œ", "OE": "Œ", "dr.": "ʒ", "oz.": "℥", "Rx.": "℞",
}
for _name, _letter in list(_GREEK.items()):
    _SYMBOLS[_name] = _letter
    _SYMBOLS[_name.capitalize()] = _letter.upper() if _name not in ("varpi", "vartheta", "varphi") else _letter
    _SYMBOLS[_name.upper()] = _SYMBOLS[_name.capitalize()]
_SYMBOL_CODE = re.compile(r"\[(" + "|".join(re.escape(k) for k in sorted(_SYMBOLS, key=len, reverse=True)) + r")\]")
_ACCENTED_SYMBOL = re.compile(r"\[([=\-).:~'`^v|,])(" + "|".join(re.escape(k) for k in sorted(_GREEK, key=len, reverse=True)) + r")\]", re.IGNORECASE)
# Accent codes: a mark before (``[=a]``, ``[)u]``, ``[.x]``) or a dot after (``[h.]``) one letter.
_ACCENT_BEFORE = {"=": "\u0304", "-": "\u0304", ")": "\u0306", ".": "\u0307", ":": "\u0308", "~": "\u0303", "'": "\u0301", "`": "\u0300", "^": "\u0302", "v": "\u030c", "|": "\u030d", ",": "\u0327"}
_ACCENT_CODE = re.compile(r"\[([=\-).:~'`^v|,])([^\W\d_])\]|\[([^\W\d_])\.\]")
_TRANSLITERATION = re.compile(r"\[(?:Greek|greek|Hebrew|Coptic|Arabic|Aramaic|Notation|Symbols?|symbol):\s*", re.UNICODE)
# "[Illus" also catches PG's misspellings ("[Illustation", "[Illusration").
_DROP_OPENER = re.compile(r"\[Illus|\[ILLUS|\[Sidenote|\[Map:|\[\*\*|\[Note regarding")
_FOOTNOTE_OPENER = re.compile(r"\[Footnote\s*[\w*]{0,4}\s*:\s*")


def _span_end(text: str, start: int, limit: int) -> tuple[int, bool]:
    """Where the bracket opened just before ``start`` closes (nested brackets counted): the index
    after its ``]`` and True, or ``limit`` and False when it is still open there."""
    depth = 1
    for i in range(start, limit):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return i + 1, True
    return limit, False


def _rewrite_bracketed(text: str, opener: re.Pattern, rewrite: Callable[[str], str], limit: Callable[[re.Match], int]) -> str:
    """Each ``[Opener ...]`` span (which may nest and span lines) replaced by ``rewrite(content)``;
    a span left open ends at ``limit(match)``."""
    out = []
    position = 0
    for match in opener.finditer(text):
        if match.start() < position:
            continue
        end, closed = _span_end(text, match.end(), limit(match))
        out.append(text[position: match.start()])
        out.append(rewrite(text[match.end(): end - 1 if closed else end]))
        position = end
    out.append(text[position:])
    return "".join(out)


def _paragraph_end(text: str, start: int) -> int:
    end = text.find("\n\n", start)
    return len(text) if end < 0 else end


def drop_notes(text: str) -> str:
    """Remove illustration captions, sidenotes and proofreader notes; an unclosed one never eats
    more than its paragraph once it is 2,000 characters long."""
    return _rewrite_bracketed(text, _DROP_OPENER, lambda content: "", lambda m: _paragraph_end(text, m.start() + 2001))


def _unwrap_transliterations(text: str) -> str:
    """``[Greek: logos]`` -> ``logos`` (balanced: the content may hold ``[=a]`` codes). An opener
    whose ``]`` is missing ends at the next opener or paragraph end, so it hides nothing after it."""

    def limit(match: re.Match) -> int:
        following = _TRANSLITERATION.search(text, match.end())
        return min(following.start() if following else len(text), _paragraph_end(text, match.end()))

    return _rewrite_bracketed(text, _TRANSLITERATION, lambda content: content, limit)


def _accent(match: re.Match) -> str:
    if match.group(3):
        return unicodedata.normalize("NFC", match.group(3) + "\u0323")
    return unicodedata.normalize("NFC", match.group(2) + _ACCENT_BEFORE[match.group(1)])


def codes_to_letters(text: str) -> str:
    """Symbol and accent codes to letters: ``[alpha]`` -> α, ``[=a]`` -> ā, ``[=omega]`` -> ω̄."""
    text = _ACCENTED_SYMBOL.sub(lambda m: unicodedata.normalize("NFC", _SYMBOLS[m.group(2)] + _ACCENT_BEFORE[m.group(1)]), text)
    return _ACCENT_CODE.sub(_accent, _SYMBOL_CODE.sub(lambda m: _SYMBOLS[m.group(1)], text))


def inline_markup(text: str) -> str:
    """Italics, footnote marks, symbol and accent codes and transliteration brackets of a paragraph."""
    text = codes_to_letters(_unwrap_transliterations(text))
    text = _FOOTNOTE_REF.sub("", text)
    text = _ITALIC.sub(lambda m: m.group(1), text)
    # What is left is a source typo ("_Grès des Vosges, _or"): an underscore at a word's edge.
    return _STRAY_UNDERSCORE.sub("", text)


def split_footnotes(text: str) -> tuple[str, list[str]]:
    """The article text without its footnotes, and the footnote texts in order.

    Newer slices put a ``FOOTNOTES:`` block after the article with ``[1] text`` entries; older
    ones put ``[Footnote 1: text]`` blocks after the paragraph that cites them.
    """
    notes: list[str] = []
    if _FOOTNOTES_HEADING.search(text):
        # After a heading, footnote entries ("  [1] text", indented continuations) run until a
        # paragraph that is neither: the article goes on (two articles may share a heading).
        body: list[str] = []
        in_notes = False
        for block in re.split(r"\n[ \t]*\n", text):
            if _FOOTNOTES_HEADING.fullmatch(block.strip("\n")):
                in_notes = True
                continue
            entry = _FOOTNOTE_ENTRY.match(block)
            if in_notes and entry:
                notes.append(block[entry.end():])
            elif in_notes and notes and block[:1].isspace():
                notes[-1] += "\n" + block
            else:
                in_notes = False
                body.append(block)
        text = "\n\n".join(body)

    def take(content: str) -> str:
        notes.append(content)
        return ""

    return _rewrite_bracketed(text, _FOOTNOTE_OPENER, take, lambda m: len(text)), notes
