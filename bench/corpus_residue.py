"""How much markup is left in a converted corpus? Counts per pattern over every article.

    python bench/corpus_residue.py corpora/britannica-sample
    python bench/corpus_residue.py corpora/britannica-1911-sample models/tiny/corpus/train.txt --name gutenberg --results
    python bench/corpus_residue.py data/splits/train.txt --json residue.json --examples 5

Each input is a folder of per-article ``.txt`` files (as ``convert`` writes them) or a record file
(``<s> TEXT </s>``, as ``combine``, ``clean`` and ``split`` write them). The articles are streamed
and scanned in batches of about 1 MB (joined by a blank line, so no match spans two articles), one
compiled regex per pattern; the raw 22M-word Gutenberg EB1911 takes about 20 s on one core.

Prints, per pattern, the count in each input and in all of them, the rate per million words, and
a few examples with 30 characters of context on either side (a seeded random sample of the
matches, so they come from all over the corpus and are the same on every run). ``--json OUT`` writes
the counts and examples; ``--results`` writes them to this script's section of bench/RESULTS.md
(``corpus_residue``, or ``corpus_residue-NAME`` with ``--name``).

What counts as residue, and what does not (see PATTERNS for the exact expressions):

- ``_word_``: underscore italics (Gutenberg's plain-text emphasis). Needs a letter after the
  opening ``_``, at most 60 characters on one line, and no letter, digit or ``_`` just outside,
  so ``snake_case`` and ``__init__`` do not count.
- ``[=a]`` accent codes (Gutenberg's ASCII accents: ``[=a]`` macron, ``[)u]`` breve, ``[.q]``,
  ``[:u]``, ``[~n]``, ``[^o]``, ``['e]``, ``[,c]``, ``[vs]`` caron, ``[s.]``/``[h.]`` dot below).
  A bracket counts only when its one or two letters carry an accent mark before them, or a ``.``,
  ``=`` or ``)`` after them; a bare ``[a]`` or ``[ii]`` (a figure label, a numbered clause, a
  bracketed Roman numeral) does not, nor does a Roman numeral with a dot (``[iv.]``). The caron
  ``v`` counts only before a consonant (``[vs]``, not ``[vi]``).
- ``[alpha]``: Gutenberg's names for Greek letters and math symbols in brackets (``[alpha]``,
  ``[Sigma]``, ``[root]``, ``[int]``, ``[oo]``), with or without an accent mark; these never occur
  as real text.
- ``[1]``: a bracketed number of 1-3 digits, the mark of a footnote or reference. Real text
  seldom brackets a bare number, but a count here may include some.
- ``'''``: a wiki bold pair (``'''Word'''``); primes such as ``R'''`` in a formula do not count.
- TeX math (``<math>...</math>``, ``\\(...\\)``, ``\\[...\\]``, and ``$...$`` with a TeX sign
  inside, not money) is kept on purpose; it is blanked out before the residue patterns run, so
  ``{{``, ``|x|``, ``a_i`` inside a formula do not count. ``<math`` and the TeX spans are reported
  for information and left out of the total.

The other patterns are literal markers: ``[Illustration`` (and its misspellings), ``[Sidenote``,
``[Greek:``, ``[Hebrew:``, other transcription notes (``[Coptic:``, ``[Arabic:``, ``[Notation:``
...), ``[v.02 p.0123]`` page markers, ``+---`` table borders (one per run such as
``+----+---+``), lines with two or more ``|``, ``FOOTNOTES``/``FOOTNOTE:``, ``[Footnote``,
``[**`` proofreaders' notes, wiki ``{{``, ``}}``, ``[[``, ``<ref``, ``rowspan``, ``colspan``,
CSS lengths like ``1em``, the Project Gutenberg licence (``Project Gutenberg``,
``gutenberg.org``, ``EBook``, ``*** START OF``, ``*** END OF``) and the full-width ``＝``/``＋``. Each is counted on its own; they hardly overlap
(an accented Greek name such as ``[.pi]`` counts only as ``[alpha]``).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "corpus_residue"
BATCH_CHARS = 1 << 20  # scan about 1 MB at a time: few regex calls, bounded memory
CONTEXT = 30  # characters of context on either side of an example

_ACCENT_MARKS = r"[=)(.\^~'`:,]"
_GREEK = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
    "tau upsilon phi chi psi omega varsigma varpi vartheta varphi digamma koppa sampi"
).split()
_SYMBOLS = ["root", "int", "oo", "flat", "sharp", "natural", "dP", "Pd", "Ch"]
# ``$...$`` is math only with a TeX sign inside: "$70,000 and ... $325,000" is money.
_DOLLAR_MATH = r"\$[^$\n]{0,500}?[\\^_{=][^$\n]{0,500}?\$"
_GREEK_NAMES = "|".join([f"[{name[0]}{name[0].upper()}]{name[1:]}" for name in _GREEK] + _SYMBOLS)


@dataclass(frozen=True)
class Pattern:
    name: str
    regex: str
    flags: int = 0
    informational: bool = False  # counted and shown, but not residue (kept on purpose)
    in_math: bool = False  # also look inside TeX math spans, which the residue patterns skip


PATTERNS = [
    Pattern("_word_", r"(?<![\w])_[A-Za-z][^_\n]{0,60}_(?![\w])"),
    Pattern("[Illustration", r"\[Il+u[a-z]*[:\]]"),
    Pattern("[Sidenote", r"\[Sidenote"),
    Pattern("[Greek:", r"\[Greek:"),
    Pattern("[Hebrew:", r"\[Hebrew:"),
    Pattern("[Coptic: etc.", r"\[(?:Coptic|Arabic|Aramaic|Syriac|Sanskrit|Chinese|Russian|Notation|Symbols?|Note|Map):"),
    Pattern("[=a] accent code", rf"\[(?:{_ACCENT_MARKS}(?!(?:{_GREEK_NAMES})\])[A-Za-z]{{1,2}}|v[bcdfghj-np-tvwxzBCDFGHJ-NP-TVWXZ]|(?![ivxIVX]+\.\])[A-Za-z]{{1,2}}[.=)])\]"),
    Pattern("[alpha] Greek/math code", rf"\[{_ACCENT_MARKS}?(?:{_GREEK_NAMES})\]"),
    Pattern("[v. page marker", r"\[v\.\s?\d"),
    Pattern("[1] footnote mark", r"\[\d{1,3}\]"),
    Pattern("[Footnote", r"\[Footnote"),
    Pattern("FOOTNOTES / FOOTNOTE:", r"\bFOOTNOTES\b|\bFOOTNOTE:"),
    Pattern("[** proofreader note", r"\[\*\*"),
    Pattern("+--- table border", r"\+[-=]{3,}[-=+]*"),
    Pattern("line with 2+ |", r"(?m)^[^\n|]*\|[^\n]*\|"),
    Pattern("{{", r"\{\{"),
    Pattern("}}", r"\}\}"),
    Pattern("[[", r"\[\["),
    Pattern("<ref", r"<ref\b"),
    Pattern("''' wiki bold", r"(?<![\w'])'''[^'\n]+?'''(?!')"),
    Pattern("rowspan", r"rowspan", re.I),
    Pattern("colspan", r"colspan", re.I),
    Pattern("1em (CSS length)", r"\b\d*\.?\d+em\b"),
    Pattern("Project Gutenberg", r"Project\s+Gutenberg", re.I),
    Pattern("gutenberg.org", r"gutenberg\.(?:org|net)", re.I),
    Pattern("EBook", r"\bE-?Books?\b", re.I),
    Pattern("*** START OF", r"\*\*\*\s*START OF", re.I),
    Pattern("*** END OF", r"\*\*\*\s*END OF", re.I),
    Pattern("full-width ＝＋", r"[＝＋]"),
    Pattern("<math", r"<math\b", informational=True, in_math=True),
    Pattern("TeX math span", rf"\\\(|\\\[|{_DOLLAR_MATH}", informational=True, in_math=True),
]

# TeX math, which conversion keeps on purpose, is blanked out before the residue patterns run, so
# ``{{``, ``}}``, ``|x|``, ``a_i`` and primes inside a formula are not counted as markup. Bounded
# spans keep an unclosed ``\(`` from costing a scan to the end of the batch.
MATH = re.compile(rf"<math[^>]{{0,200}}>[\s\S]{{0,5000}}?</math>|\\\([\s\S]{{0,2000}}?\\\)|\\\[[\s\S]{{0,5000}}?\\\]|{_DOLLAR_MATH}")


@dataclass
class Tally:
    """Counts of one input (or of all of them) and a seeded sample of example contexts."""

    examples_wanted: int
    articles: int = 0
    words: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {p.name: 0 for p in PATTERNS})
    examples: dict[str, list[str]] = field(default_factory=lambda: {p.name: [] for p in PATTERNS})
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def offer(self, name: str, text: str, start: int, end: int) -> None:
        """Reservoir sampling: each match so far has the same chance to be an example."""
        seen = self.counts[name]
        keep = self.examples[name]
        if len(keep) < self.examples_wanted:
            keep.append(context(text, start, end))
        elif self.examples_wanted:
            slot = self.rng.randrange(seen)
            if slot < self.examples_wanted:
                keep[slot] = context(text, start, end)

    @property
    def residue(self) -> int:
        return sum(self.counts[p.name] for p in PATTERNS if not p.informational)


def context(text: str, start: int, end: int) -> str:
    """The match with CONTEXT characters on either side, on one line (newlines shown as ⏎).

    A match longer than 2 * CONTEXT (a table row) is cut there and shown without the right side.
    """
    left = text[max(0, start - CONTEXT) : start]
    if end - start > 2 * CONTEXT:
        shown = text[start : start + 2 * CONTEXT] + "…"
    else:
        shown = text[start:end] + text[end : end + CONTEXT]
    return (left + shown).replace("\n", "⏎")


def blank_math(text: str) -> str:
    """``text`` with every TeX math span turned into spaces (newlines kept), so offsets still match."""
    return MATH.sub(lambda match: _NOT_NEWLINE.sub(" ", match.group()), text)


_NOT_NEWLINE = re.compile(r"[^\n]")


def iter_articles(path: Path) -> Iterator[str]:
    """The article texts of a folder of per-article ``.txt`` files or of a record file."""
    from distill.corpus.records import iter_records
    from distill.errors import DistillError

    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise DistillError(f"{path}: holds no .txt files; give a folder of per-article .txt files or a record file")
        for file in files:
            yield file.read_text(encoding="utf-8")
    elif path.is_file() and path.suffix == ".json":
        yield from iter_wikisource_pages(path)
    elif path.is_file():
        yield from iter_records(path)
    else:
        raise DistillError(f"{path}: not found; give a folder of per-article .txt files or a record file")


def iter_wikisource_pages(path: Path) -> Iterator[str]:
    """Each ``Page:`` wikitext of a JSON file (a list of ``{"raw_text": ...}`` or a map of page title
    to wikitext), converted the way ``convert`` converts an article's pages."""
    from distill.corpus.wikitext import wikitext_to_text

    data = json.loads(path.read_text(encoding="utf-8"))
    pages = data.values() if isinstance(data, dict) else (item.get("raw_text") for item in data)
    for wikitext in pages:
        if wikitext:
            yield wikitext_to_text(wikitext)


def iter_batches(articles: Iterator[str], size: int = BATCH_CHARS) -> Iterator[tuple[str, int, int]]:
    """(text, articles, words) of about ``size`` characters, articles joined by a blank line."""
    batch: list[str] = []
    chars = words = 0
    for text in articles:
        batch.append(text)
        chars += len(text) + 2
        words += len(text.split())
        if chars >= size:
            yield "\n\n".join(batch), len(batch), words
            batch, chars, words = [], 0, 0
    if batch:
        yield "\n\n".join(batch), len(batch), words


def scan(path: Path, examples: int) -> Tally:
    tally = Tally(examples)
    compiled = [(p.name, re.compile(p.regex, p.flags), p.in_math) for p in PATTERNS]
    for text, articles, words in iter_batches(iter_articles(path)):
        tally.articles += articles
        tally.words += words
        prose = blank_math(text)
        for name, regex, in_math in compiled:
            for match in regex.finditer(text if in_math else prose):
                tally.counts[name] += 1
                tally.offer(name, text, match.start(), match.end())
    return tally


def merge(tallies: list[Tally], examples: int) -> Tally:
    """All inputs together; the examples are a seeded sample of the inputs' examples."""
    total = Tally(examples)
    rng = random.Random(0)
    for tally in tallies:
        total.articles += tally.articles
        total.words += tally.words
        for name in total.counts:
            total.counts[name] += tally.counts[name]
    for name in total.examples:
        pool = [example for tally in tallies for example in tally.examples[name]]
        total.examples[name] = pool if len(pool) <= examples else rng.sample(pool, examples)
    return total


def per_million(count: int, words: int) -> str:
    return f"{count * 1e6 / words:,.1f}" if words else "-"


def report(labels: list[str], tallies: list[Tally], total: Tally) -> tuple[str, str]:
    """(plain text for the terminal, markdown for RESULTS.md)."""
    several = len(tallies) > 1
    columns = [*labels, "all"] if several else labels
    rows = [*tallies, total] if several else tallies
    width = max(len(p.name) for p in PATTERNS) + 2

    cell = max(12, *(len(label) for label in columns)) + 2
    head = f"{'pattern':<{width}}" + "".join(f"{label:>{cell}}" for label in columns) + f"{'per M words':>14}"
    lines = [head, "-" * len(head)]
    md = ["| pattern | " + " | ".join(f"`{label}`" for label in columns) + " | per M words |", "|---|" + "---:|" * (len(columns) + 1)]
    for pattern in PATTERNS:
        counts = [tally.counts[pattern.name] for tally in rows]
        note = " (info, kept)" if pattern.informational else ""
        rate = per_million(total.counts[pattern.name], total.words)
        lines.append(f"{pattern.name + note:<{width}}" + "".join(f"{count:>{cell},}" for count in counts) + f"{rate:>14}")
        name = pattern.name.replace("|", "\\|")  # a bare | would split the markdown cell, even in a code span
        md.append(f"| `{name}`{note} | " + " | ".join(f"{count:,}" for count in counts) + f" | {rate} |")
    residue = [tally.residue for tally in rows]
    rate = per_million(total.residue, total.words)
    lines.append(f"{'residue (all but info)':<{width}}" + "".join(f"{count:>{cell},}" for count in residue) + f"{rate:>14}")
    md.append("| **residue (all but info)** | " + " | ".join(f"**{count:,}**" for count in residue) + f" | **{rate}** |")
    sizes = [f"{label}: {tally.articles:,} articles, {tally.words:,} words" for label, tally in zip(labels, tallies)]

    shown = [p for p in PATTERNS if total.examples[p.name]]
    example_lines = [f"{p.name}:\n" + "\n".join(f"    {example}" for example in total.examples[p.name]) for p in shown]
    text = "\n".join(sizes) + "\n\n" + "\n".join(lines) + ("\n\nExamples:\n" + "\n".join(example_lines) if shown else "")
    markdown = "\n\n".join(["Inputs: " + "; ".join(sizes) + ".", "\n".join(md)] + (["Examples:\n\n```text\n" + "\n".join(example_lines) + "\n```"] if shown else []))
    return text, markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="folders of per-article .txt files, record files (<s> TEXT </s>), or JSON files of WikiSource Page: wikitext (converted first)")
    parser.add_argument("--name", help="label of this corpus in the RESULTS.md section name (corpus_residue-NAME)")
    parser.add_argument("--examples", type=int, default=3, help="example contexts per pattern (default 3)")
    parser.add_argument("--json", help="write the counts and examples to this JSON file")
    parser.add_argument("--results", nargs="?", type=Path, const=REPO / "bench" / "RESULTS.md", metavar="FILE",
                        help="write the table to this script's section of bench/RESULTS.md (or of FILE)")
    args = parser.parse_args(argv)
    if args.examples < 0:
        parser.error("--examples: must be 0 or more")

    from distill.errors import DistillError

    started = time.perf_counter()
    try:
        tallies = [scan(Path(path), args.examples) for path in args.inputs]
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    total = merge(tallies, args.examples)
    text, markdown = report(args.inputs, tallies, total)
    print(text)
    print(f"\n{total.words:,} words scanned in {seconds:.1f} s")

    if args.json:
        from distill.atomic import atomic_write_json

        atomic_write_json(args.json, {
            "inputs": {path: {"articles": t.articles, "words": t.words, "counts": t.counts, "examples": t.examples} for path, t in zip(args.inputs, tallies)},
            "total": {"articles": total.articles, "words": total.words, "residue": total.residue, "counts": total.counts},
            "patterns": {p.name: {"regex": p.regex, "ignore_case": bool(p.flags & re.I), "informational": p.informational} for p in PATTERNS},
        })  # fmt: skip
    if args.results:
        if str(REPO / "bench") not in sys.path:  # when imported rather than run as a script
            sys.path.insert(0, str(REPO / "bench"))
        from results import write_section

        command = " ".join(["python bench/corpus_residue.py", *args.inputs, *(["--name", args.name] if args.name else [])])
        title = f"## Markup residue in the converted corpus{f' ({args.name})' if args.name else ''}"
        write_section(f"{SECTION}-{args.name}" if args.name else SECTION, f"{title}\n\nCommand: `{command}`\n\n{markdown}", args.results)
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
