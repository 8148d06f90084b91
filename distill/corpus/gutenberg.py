"""Project Gutenberg's 1911 Encyclopaedia Britannica slices to one plain-text article each.

Project Gutenberg published the 11th edition as "slices" (``<ebook id>-8.txt``, Latin-1 or UTF-8,
CRLF, hard-wrapped at ~70 columns). Between the ``*** START OF`` / ``*** END OF`` lines a slice
holds credits, a transcriber's note, often a list of corrections, usually an ``ARTICLES IN THIS
SLICE`` list, contributor front matter, and then the articles. An article is marked only by its
uppercase headword at the start of a paragraph (``DEMIURGE (Gr. ...), a handicraftsman ...``);
most slices leave three blank lines between articles and one between paragraphs; a few older
releases leave two, or one, and each slice is read by its own gap (:func:`_separator`).

What :func:`convert_slice` makes of that, one documented way each:

* everything outside START/END, and every line before the first article (credits, notes,
  correction lists, the article list, contributors), is dropped;
* articles are cut at their headwords and checked against the slice's own article list: a summary
  per slice gives ``listed``, ``found`` and the ``missing`` headwords;
* an article that continues into the next slice (``BULGARIA (_continued from part 3_)``) is joined
  to its first part by :func:`join_continued`;
* hard-wrapped lines are joined into paragraphs (a line ending in ``--`` or in a compound's ``-``
  joins without a space, a suspended hyphen before "and"/"or"/"to" keeps it: "Glass- and
  ivory-working"); blocks of column-aligned lines (formulae, verse, lists) keep their line breaks;
* the title is the headword and the capitalised names after it, title-cased (``CAPEFIGUE,
  JEAN-BAPTISTE HONORÉ RAYMOND (1801-1872)`` -> ``Capefigue, Jean-Baptiste Honoré Raymond``);
  section headings inside an article (``AUTHORITIES.--``, ``FIG. 6.--``) never start one, and a
  list of corrections after the last article is dropped;
* ``_italics_`` lose their underscores; ``^`` superscripts and ``_{2}`` subscripts are kept as
  they are (the WikiSource path writes ``<sup>``/``<sub>`` the same way);
* footnotes: the reference marks (``[1]``) are removed from the running text and each footnote's
  text becomes a paragraph at the end of its article, in order (WikiSource ``<ref>`` alike);
* ``[Illustration: ...]`` captions, ``[Sidenote: ...]`` marginal notes, ``[v.02 p.0001]`` page
  markers and ``[** ...]`` proofreader notes are removed;
* accent codes become Unicode letters: ``[=a]`` ā, ``[)u]`` ŭ, ``[h.]`` ḥ, ``[.x]`` ẋ, ``[:x]`` ẍ,
  ``[~n]`` ñ, ``['e]`` é, ``[=omega]`` ω̄; Greek letter names become letters (``[alpha]`` α, ``[Omega]`` Ω) and a
  few symbols their sign (``[root]`` √, ``[oo]`` ∞, ``[dP]`` ∂, ``[int]`` ∫, ``[gh]`` ȝ, ``[dr.]`` ʒ);
  placeholders for glyphs PG could not render (``[symbol]``, ``[HRG]``, ``[Ch]``) stay as they are;
* ``[Greek: dêmiourgos]``, ``[Hebrew: ...]`` (and Coptic, Arabic, Aramaic): the brackets and label
  go and the transliteration stays, in Latin letters as PG gives it (an opener PG left unclosed
  ends at the next one);
* ASCII tables drawn with ``+---+`` borders or ``|`` columns are removed and counted (their cells
  are figures, not prose);
* the contributor's initials at an article's end (``(K. S.)``) are removed, as the WikiSource
  path drops ``{{EB1911 footer initials}}``.

Reading the slice files (encodings, boilerplate, order) is :mod:`~distill.corpus.gutenberg_slices`;
the inline markup (codes, brackets, footnotes, italics) is :mod:`~distill.corpus.gutenberg_markup`;
this module cuts a slice into articles.
"""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path

from distill.corpus.gutenberg_markup import codes_to_letters, drop_notes, inline_markup, split_footnotes
from distill.corpus.gutenberg_slices import read_gutenberg_file, strip_boilerplate
from distill.corpus.naming import match_key

_UP = "A-ZÀ-ÖØ-ÞĀ-ŽŒḀ-ỿ"  # capital letters a headword is written in
# An uppercase headword at the start of a paragraph, then "," or " (": "CAPE MAY, a city",
# "CAPEL (OF HADHAM), ARTHUR", "D'ALEMBERT, JEAN", "McCLELLAN, GEORGE".
_HEADWORD = re.compile(
    rf"^(?P<head>(?:Mc|Mac|M')?[{_UP}][{_UP}'’\-\.&]*(?:[ \-](?:(?:Mc|Mac|M')?[{_UP}0-9][{_UP}0-9'’\-\.&]*|of|de|du|des|la|le|von|van|der|den|y|e|da|di|and|et|d'[{_UP}][{_UP}'’\-]*))*)"
    r"(?P<after>,| ?\(| ?\[|\.(?= [A-Z0-9\"])| or (?=[A-Z]{2}))"
)
_CONTINUED_FROM = re.compile(r"\s*\(_?continued\s+from[^)]*\)_?\.?", re.IGNORECASE)
_CONTINUED_IN = re.compile(r"^\s*[_(]+continued in [^)]*\)_?\.?_?\s*$", re.IGNORECASE | re.MULTILINE)
_BACK_MATTER = re.compile(r"^\s*(?:Corrections made to (?:the )?printed original|Typographical errors corrected|Transcriber's [Nn]otes?\b.*:)", re.IGNORECASE)
_NOT_A_HEADWORD = {"AUTHORITIES", "AUTHORITY", "BIBLIOGRAPHY", "REFERENCES", "LITERATURE", "FIG", "FIGS", "TABLE", "RULE", "NOTE", "NOTES", "PLATE", "SOURCES", "WORKS"}
_PAGE_MARKER = re.compile(r"\[v\.\s?\d+\s+p\.\s?\d+\]")
_SEPARATOR_BLOCK = re.compile(r"^(?:\s*(?:\[v\.\s?\d+\s+p\.\s?\d+\]|(?:\*\s+){2,}\*)\s*)+$")
_TABLE_BORDER = re.compile(r"\+[-=]{2,}|[-=]{2,}\+")
_TABLE_ROW = re.compile(r"^\s*\||\|\s*$|\|[^|\n]*\|")
_INITIALS = re.compile(r"(?:^|\s{2,}|\n)\s*\(\s*(?:[A-Z][A-Za-z]{0,3}\.\s*){1,5}(?:[;,]\s*(?:and\s+)?(?:[A-Z][A-Za-z]{0,3}\.\s*){1,5})*\*?\s*\)\s*$")
_SPACES = re.compile(r"[ \t]+")


@dataclass
class GutenbergArticle:
    """One article of a slice: its title (from the headword), its text and where it came from."""

    title: str
    key: str  # the headword normalised for matching against the slice's list
    body: str
    source: str
    continued: bool = False  # starts "(continued from ...)": the rest of an article of an earlier slice


@dataclass
class SliceReport:
    """What :func:`convert_slice` found in one slice."""

    file: str
    articles: list[GutenbergArticle] = field(default_factory=list)
    listed: int = 0
    found: int = 0
    missing: list[str] = field(default_factory=list)
    tables: int = 0

    def summary(self) -> dict:
        return {
            "file": self.file,
            "articles": len(self.articles),
            "words": sum(len(a.body.split()) for a in self.articles),
            "listed": self.listed,
            "found": self.found,
            "missing": self.missing,
            "tables_removed": self.tables,
        }


def headword_key(headword: str) -> str:
    """A headword reduced for matching: the part before "," or " (", accents and punctuation gone."""
    return match_key(re.split(r",| ?\(| ?\[|\. | or ", headword, maxsplit=1)[0])


def parse_article_list(body: str) -> tuple[list[str], int]:
    """The headwords of the ``ARTICLES IN THIS SLICE`` list and the offset where the list ends.

    The list is two columns separated by runs of spaces; it ends at the first two blank lines after
    it started. A slice without a list gives ``([], 0)``.
    """
    match = re.search(r"^\s*ARTICLES IN THIS SLICE:?\s*$", body, re.MULTILINE)
    if match is None:
        return [], 0
    entries: list[str] = []
    position = match.end()
    blank = 0
    started = False
    for line in body[position:].split("\n"):
        position += len(line) + 1
        if not line.strip():
            blank += 1
            if started and blank >= 2:
                break
            continue
        blank = 0
        started = True
        entries.extend(part.strip() for part in re.split(r"\s{2,}", line.strip()) if part.strip())
    return entries, min(position, len(body))


def _blocks(text: str) -> list[tuple[int, str]]:
    """(blank lines before, block) for each run of non-blank lines.

    A block that is only a page marker or a row of asterisks counts as blank lines: it separates
    what is around it, it is not text.
    """
    out = []
    blank = 0
    lines: list[str] = []
    for line in text.split("\n") + [""]:
        if line.strip():
            lines.append(line.rstrip())
            continue
        if lines:
            block = "\n".join(lines)
            lines = []
            if _SEPARATOR_BLOCK.match(block):
                blank += 1 + block.count("\n")
            else:
                out.append((blank, block))
                blank = 0
        blank += 1
    return out


def _is_display(lines: list[str]) -> bool:
    """Column-aligned blocks (formulae, verse, lists) keep their line breaks."""
    if len(lines) < 2:
        return False
    aligned = sum(1 for line in lines if re.search(r"\S {3,}\S", line.strip()) or len(line) - len(line.lstrip()) >= 5)
    return aligned * 2 >= len(lines)


def _unwrap(block: str) -> str:
    """A block's lines as one paragraph (or as lines, for a display block)."""
    lines = [line for line in block.split("\n")]
    if _is_display(lines):
        return "\n".join(_SPACES.sub(" ", line).strip() for line in lines if line.strip())
    out = ""
    for line in lines:
        line = line.strip()
        if not out:
            out = line
        elif out.endswith("-") and not out.endswith((" -", "--")) and not re.match(r"(?:and|or|nor|to|&)\b", line):
            out += line  # a compound cut at its hyphen ("Madrid-" / "Cordova")
        elif out.endswith("--"):
            out += line
        else:
            out += " " + line
    return _SPACES.sub(" ", out)


def _remove_tables(block: str) -> tuple[str, int]:
    """Drop ``+---+`` borders and ``|`` rows of ASCII tables; returns the rest and the tables met."""
    lines = block.split("\n")
    keep = []
    tables = 0
    in_table = False
    for line in lines:
        if _TABLE_BORDER.search(line) or _TABLE_ROW.search(line):
            if not in_table:
                tables += 1
            in_table = True
            continue
        in_table = False
        keep.append(line)
    return "\n".join(keep), tables


def article_text(raw: str) -> tuple[str, int]:
    """One article's raw slice text (headword paragraph first) to plain text; returns (text, tables)."""
    raw = _PAGE_MARKER.sub("", raw)
    raw = _CONTINUED_IN.sub("", raw)
    raw = drop_notes(raw)
    raw, notes = split_footnotes(raw)
    paragraphs = []
    tables = 0
    for _, block in _blocks(raw):
        # A contributor's initials close an article or a signed part of one ("(E. H. B.; D. G. H.)").
        block = _INITIALS.sub("", block.rstrip())
        block, found = _remove_tables(block)
        tables += found
        if block.strip():
            paragraphs.append(inline_markup(_unwrap(block)))
    for note in notes:
        for _, block in _blocks(note):
            paragraphs.append(inline_markup(_unwrap(block)))
    text = "\n".join(p.strip() for p in paragraphs if p.strip())
    return text, tables


_PARTICLES = {"of", "de", "du", "des", "la", "le", "von", "van", "der", "den", "y", "e", "da", "di", "and", "et", "the", "in", "on", "or"}
_ROMAN = re.compile(r"^[IVXLC]+\.?$")
_TITLE_MORE = re.compile(
    rf"^, ((?:Mc|Mac|M')?[{_UP}][{_UP}'’\-\.&]+(?: (?:(?:Mc|Mac|M')?[{_UP}0-9][{_UP}0-9'’\-\.&]*|of|de|du|la|le|von|van|der|y|da|di|and))*)(?=,| ?\(| ?\[|\.? |$)"
)


def _title_case(word: str) -> str:
    if _ROMAN.match(word) and word not in ("I.", "LI", "CI", "DI", "LI."):
        return word
    if word.startswith(("Mc", "Mac")) and len(word) > 3 and word[2:].isupper():
        return word[:2] + _title_case(word[2:]) if word.startswith("Mc") else word[:3] + _title_case(word[3:])
    return "".join(part[:1].upper() + part[1:].lower() for part in re.split(r"(?<=[\-'’ ])", word))


def _title(head: str) -> str:
    """``CAPE MAY`` -> ``Cape May``, ``CHARLES IV`` -> ``Charles IV``; particles stay lower-case."""
    words = head.split(" ")
    return " ".join(w.lower() if i and w.lower() in _PARTICLES else _title_case(w) for i, w in enumerate(words))


def article_title(block: str, match: re.Match) -> str:
    """The article's title: the headword and the uppercase names after it (``CAPEFIGUE, JEAN``),
    title-cased: ``Capefigue, Jean``."""
    parts = [match.group("head")]
    rest = block[match.end("head"):].split("\n", 1)[0]
    while True:
        more = _TITLE_MORE.match(rest)
        if more is None or sum(ch.isupper() for ch in more.group(1)) < 2:
            break
        parts.append(more.group(1))
        rest = rest[more.end():]
    # "LEAGUE. 1. ..." and "ARTHUR I." end their heading with a full stop (and a section number).
    parts = [re.sub(r"(?:\s+\d+\.?)+$", "", part.strip()).rstrip(". ") for part in parts]
    return ", ".join(_title(part) for part in parts if part)


def _candidate(block: str) -> re.Match | None:
    """The headword match of a block that starts like an article, else None."""
    match = _HEADWORD.match(block)
    if match is None or sum(ch.isupper() for ch in match.group("head")) < 2 or not headword_key(match.group("head")):
        return None
    head = match.group("head")
    # Section headings inside an article ("AUTHORITIES.--", "FIG. 6.--", "TABLE II.--").
    if "--" in head or ".-" in head or re.split(r"[\s.]", head, maxsplit=1)[0] in _NOT_A_HEADWORD:
        return None
    return match


def _separator(blocks: list[tuple[int, str]]) -> int:
    """How many blank lines stand between two articles in this slice (3, 2 or 1).

    Most slices leave three blank lines between articles and one between paragraphs; a few old
    releases leave two, or one. A slice is read by the widest gap that at least 10 headwords have.
    """
    gaps = collections.Counter(min(blank, 3) for blank, block in blocks if _candidate(block))
    for gap in (3, 2):
        if sum(n for g, n in gaps.items() if g >= gap) >= 10:
            return gap
    return 1


_FRONT_MARKER = re.compile(
    r"ARTICLES IN THIS SLICE|INITIALS USED IN|PRINCIPAL UNSIGNED ARTICLES|ELEVENTH EDITION|^\s*VOLUME [IVXL]+\b|"
    r"^\s*Transcriber's [Nn]ote|E-Text Edition|^\s*\[Note|^\s*Produced by|A DICTIONARY OF ARTS|^\s*THE ENCYCLOP",
    re.MULTILINE,
)


def _front_matter_end(blocks: list[tuple[int, str]]) -> int:
    """Index of the first block after the volume's front matter (credits, notes, contributors).

    Front matter is recognised by its headings (``INITIALS USED IN``, ``ELEVENTH EDITION``, ...)
    in short blocks near the start; the articles start after the last one.
    """
    last = 0
    for i, (_, block) in enumerate(blocks[:800]):
        if len(block) < 400 and _FRONT_MARKER.search(block):
            last = i + 1
    return last


def convert_slice(path: str | Path, text: str | None = None) -> SliceReport:
    """Cut one slice into articles (see the module docstring); nothing is written."""
    path = Path(path)
    report = SliceReport(file=path.name)
    body = strip_boilerplate(read_gutenberg_file(path) if text is None else text.replace("\r\n", "\n"), str(path))
    listed_entries, list_end = parse_article_list(body)
    listed = collections.Counter(headword_key(e) for e in listed_entries if headword_key(e))
    report.listed = sum(listed.values())
    # Codes become letters first, so that a headword such as BUKH[=A]R[=I] is read whole.
    blocks = [(blank, codes_to_letters(_PAGE_MARKER.sub("", block).lstrip())) for blank, block in _blocks(body)]
    start = len(_blocks(body[:list_end])) if list_end else _front_matter_end(blocks)
    # A list of corrections may follow the last article.
    end_of_articles = next((i for i in range(start, len(blocks)) if _BACK_MATTER.match(blocks[i][1])), len(blocks))
    blocks = blocks[:end_of_articles]
    gap = _separator(blocks[start:])

    heads: list[tuple[int, re.Match]] = []
    for index in range(start, len(blocks)):
        blank, block = blocks[index]
        match = _candidate(block)
        # A listed headword starts an article wherever it stands; another only after an article gap.
        if match is not None and (blank >= gap or headword_key(match.group("head")) in listed):
            heads.append((index, match))
    found = collections.Counter()
    for n, (index, match) in enumerate(heads):
        end = heads[n + 1][0] if n + 1 < len(heads) else len(blocks)
        raw = "\n\n".join(block for _, block in blocks[index:end])
        head = match.group("head")
        key = headword_key(head)
        first, _, after = raw.partition("\n\n")
        marker = _CONTINUED_FROM.search(first)
        continued = marker is not None
        if continued:
            # "HEADWORD (_continued from part 3_)": the rest of an article begun in an earlier slice.
            # Its heading line goes; text after it on the same paragraph stays.
            first = first[marker.end():].strip()
            raw = first + "\n\n" + after if first else after
        text_, tables = article_text(raw)
        report.tables += tables
        found[key] += 1
        if text_.strip():
            report.articles.append(GutenbergArticle(article_title(blocks[index][1], match), key, text_, path.name, continued))
    if listed:
        report.found, report.missing = _match_list(listed, found)
    return report


def _match_list(listed: collections.Counter, found: collections.Counter) -> tuple[int, list[str]]:
    """How many listed headwords were found, and the missing ones.

    A list entry may carry more of the name than the headword's first part ("CAPITO WOLFGANG" for
    "CAPITO (or KÖPFEL), WOLFGANG"): an entry that is not found exactly is matched to a found
    headword it starts with.
    """
    missing = listed - found
    spare = found - listed
    for key in sorted(missing):
        for _ in range(missing[key]):
            match = next((k for k in spare if spare[k] > 0 and (key.startswith(k) or k.startswith(key))), None)
            if match is None:
                break
            spare[match] -= 1
            missing[key] -= 1
    missing = +missing
    return sum(listed.values()) - sum(missing.values()), sorted(missing.elements())


def join_continued(articles: list[GutenbergArticle]) -> list[GutenbergArticle]:
    """Append each ``continued from`` part to the last earlier article with the same headword."""
    out: list[GutenbergArticle] = []
    last_by_key: dict[str, GutenbergArticle] = {}
    for article in articles:
        first = last_by_key.get(article.key)
        if article.continued and first is not None:
            first.body = first.body.rstrip("\n") + "\n" + article.body.lstrip("\n")
            continue
        out.append(article)
        last_by_key[article.key] = article
    return out


__all__ = [
    "GutenbergArticle",
    "SliceReport",
    "article_text",
    "convert_slice",
    "headword_key",
    "join_continued",
    "parse_article_list",
]
