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

Each step has its module: :mod:`~distill.corpus.wikitext_pages` (transclusion),
:mod:`~distill.corpus.wikitext_templates`, :mod:`~distill.corpus.wikitext_tables` and
:mod:`~distill.corpus.wikitext_links`; this one holds footnotes, ``<math>``, tags and the order of
the steps.
"""
from __future__ import annotations

import html
import re

from distill.corpus.paragraphs import HARD_BREAK, paragraphs
from distill.corpus.wikitext_links import replace_links
from distill.corpus.wikitext_pages import page_body, strip_section_tags, tag_attrs
from distill.corpus.wikitext_stats import ConvertStats
from distill.corpus.wikitext_tables import wikitables_to_text
from distill.corpus.wikitext_templates import FRACTION_JOIN, expand_templates

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
        attrs = tag_attrs(match.group(1))
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
    text = page_body(text)
    text, scores = re.subn(r"<score\b[^>]*?(?:/>|>.*?(?:</score\s*>|$))", "", text, flags=re.IGNORECASE | re.DOTALL)
    stats.scores += scores
    text, notes = _take_footnotes(text)
    stats.footnotes += len(notes)
    paragraphs_ = [_to_text(text, stats)] + [_to_text(note, stats) for note in notes]
    return "\n".join(p for p in paragraphs_ if p)


def _to_text(text: str, stats: ConvertStats) -> str:
    text = re.sub(r"<references\b[^>]*/?>(?:\s*</references>)?", "", text, flags=re.IGNORECASE)
    text = strip_section_tags(text)
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
    text = wikitables_to_text(text, stats)
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
