"""Raw articles to one plain-text file per article (title on the first line, then the body).

Three raw forms are read:

* ``wikisource``: what ``scrape`` stores, one JSON per article with ``title`` and ``wikitext``
  plus the transcluded ``pages`` (or a rendered ``html`` page instead of wikitext);
* ``eb1810``: the 1810 edition's volume files, lists of ``{"h": headword, "t": article HTML,
  "sp": start page, "ep": end page}``; front/back matter, index lists, near-empty entries and
  entries whose headword is a cut sentence (a mis-split of a long article) are dropped, every
  other entry is kept whole;
* ``gutenberg``: Project Gutenberg's 1911 edition, slice files ``.txt``/``.txt.gz`` (see
  :mod:`distill.corpus.gutenberg`); the summary gives articles, words and listed/found/missing
  headwords per slice, and an article continued into the next slice is joined.

Several sources may be converted into one folder (a WikiSource scrape and the Gutenberg slices):
an article whose whole title an earlier source already gave is kept once, from the earlier source.

Every input is converted in memory first, so a bad file stops the run before anything is written.
The output folder keeps a list of the files it wrote (``.distill-convert.json``): a rerun replaces
or removes only those, leaves every other file alone and refuses to overwrite one.
"""
from __future__ import annotations

import collections
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from distill.atomic import write_folder
from distill.corpus import gutenberg, gutenberg_slices
from distill.corpus.htmltext import eb1810_html_to_text, rendered_html_to_text
from distill.corpus.naming import display_title, match_key, safe_filename
from distill.corpus.wikitext import wikitext_to_text
from distill.corpus.wikitext_pages import assemble_article
from distill.corpus.wikitext_stats import ConvertStats
from distill.errors import DistillError

FORMATS = ("auto", "wikisource", "eb1810", "gutenberg")
WRITTEN = ".distill-convert.json"  # in the output folder: the article files the last convert wrote
# Headwords that are really a sentence cut out of a long article ("THIS IS BY NO").
_FRAGMENT_END = {"A", "AN", "AND", "AS", "BE", "BY", "FOR", "FROM", "IN", "IS", "NO", "OF", "ON", "THAT", "THE", "THIS", "TO", "WITH"}
_EB1810_MATTER = re.compile(r"^(END OF|EXPLANATION OF THE PLATE|DIRECTIONS FOR|ERRATA|INDEX\b|CONTENTS\b)", re.IGNORECASE)


@dataclass
class Article:
    """One converted article: the title line, the body, and the key its file name is hashed from."""

    title: str
    body: str
    key: str
    incomplete: str | None = None  # why the source text is cut short or runs on (a missing page or section)

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.body}\n"

    @property
    def filename(self) -> str:
        return safe_filename(self.title, ".txt", key=self.key)


@dataclass
class ConvertReport:
    articles: list[Article] = field(default_factory=list)
    dropped: collections.Counter = field(default_factory=collections.Counter)
    stats: ConvertStats = field(default_factory=ConvertStats)
    incomplete: list[dict] = field(default_factory=list)  # WikiSource articles left out: title, file, problem
    slices: list[dict] = field(default_factory=list)  # per Gutenberg slice: articles, words, listed, found, missing

    def summary(self) -> dict:
        summary = {
            "articles": len(self.articles),
            "words": sum(len(a.text.split()) for a in self.articles),
            "bytes": sum(len(a.text.encode("utf-8")) for a in self.articles),
            "dropped": dict(sorted(self.dropped.items())),
            "missing_pages": self.stats.missing_pages,
            "missing_sections": self.stats.missing_sections,
            "tables": self.stats.tables,
            "footnotes": self.stats.footnotes,
            "scores_dropped": self.stats.scores,
            "unknown_templates": dict(self.stats.unknown_templates.most_common(10)),
        }
        if self.incomplete:
            summary["incomplete"] = self.incomplete[:50]
        if self.slices:
            listed = sum(item["listed"] for item in self.slices)
            found = sum(item["found"] for item in self.slices)
            summary["gutenberg"] = {
                "slices": len(self.slices),
                "listed": listed,
                "found": found,
                "found_fraction": round(found / listed, 4) if listed else None,
                "tables_removed": sum(item["tables_removed"] for item in self.slices),
                "per_slice": self.slices,
            }
        return summary


def convert_wikisource_article(data: object, source: str, stats: ConvertStats | None = None) -> Article | None:
    """One scraped article JSON to an :class:`Article`; None when it has no body text.

    ``Article.incomplete`` names the missing pages and sections when the transcluded text is cut
    short or runs on into the following articles (None when it is whole).
    """
    stats = stats if stats is not None else ConvertStats()
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("title"), str) or not (
        isinstance(data.get("wikitext"), str) or isinstance(data.get("html"), str)
    ):
        raise DistillError(f'{source}: not a scraped article (needs "title" and "wikitext" or "html"); re-scrape it or remove the file')
    if isinstance(data.get("wikitext"), str):
        pages = data.get("pages") or {}
        if not isinstance(pages, dict):
            raise DistillError(f'{source}: "pages" must map Page: titles to wikitext; re-scrape it or remove the file')
        if re.match(r"\s*#redirect", data["wikitext"], re.IGNORECASE):
            return None
        body = wikitext_to_text(assemble_article(data["wikitext"], pages, stats, problems), stats)
    else:
        body = rendered_html_to_text(data["html"], source)
    if not body.strip():
        return None
    return Article(display_title(data["title"]), body, data["title"], incomplete="; ".join(problems) or None)


def eb1810_articles(path: Path, data: object, *, min_words: int, max_words: int | None, dropped: collections.Counter) -> list[Article]:
    """The usable articles of one 1810 volume file (see the module docstring for what is dropped)."""
    if not isinstance(data, list) or not all(isinstance(item, dict) and isinstance(item.get("h"), str) and isinstance(item.get("t"), str) for item in data):
        raise DistillError(f'{path}: not an 1810 volume file (a JSON list of {{"h": headword, "t": html}}); check --format')
    articles = []
    for number, item in enumerate(data):
        title = re.sub(r"\s+", " ", item["h"]).strip()
        body = eb1810_html_to_text(item["t"])
        lines = body.split("\n")
        words = len(body.split())
        title_words = title.upper().split()
        if not re.search(r"[A-Za-z]", title) or _EB1810_MATTER.match(title):
            dropped["front or back matter"] += 1
        elif len(title_words) >= 6 or (len(title_words) >= 4 and title_words[-1] in _FRAGMENT_END):
            dropped["headword is a sentence fragment"] += 1
        elif words < min_words:
            dropped["near-empty"] += 1
        elif len(lines) >= 10 and sum(bool(re.search(r"\d[.,;]?$", line)) for line in lines) > len(lines) / 2:
            dropped["index list"] += 1
        elif max_words is not None and words > max_words:
            dropped["longer than --max-words"] += 1
        else:
            articles.append(Article(title, body, f"eb1810/{path.stem}/{number}"))
    return articles


def _source_files(source: Path, fmt: str) -> list[tuple[Path, str]]:
    """(file, format) for every raw file under ``source``; ``auto`` looks at each file."""
    if not source.exists():
        raise DistillError(f"{source}: not found; give a folder of scraped .json articles, 1810 volume files or Project Gutenberg slices")
    if source.is_file():
        files = [source]
    else:
        files = sorted(source.glob("*.json")) + gutenberg_slices.gutenberg_files(source)
    out = []
    for path in files:
        if path.suffix == ".json":
            kind = fmt if fmt != "auto" else "json"
        elif fmt in ("auto", "gutenberg") and gutenberg_slices.is_gutenberg_file(path):
            kind = "gutenberg"
        elif fmt == "gutenberg":
            raise DistillError(f"{path}: not a Project Gutenberg text (no '*** START OF' line); remove it from {source} or drop --format gutenberg")
        else:
            continue  # a README or other text file beside the raw files
        out.append((path, kind))
    if not out:
        raise DistillError(
            f"{source}: holds no .json articles or Project Gutenberg slices; scrape into it (python -m distill.corpus scrape --out {source}) "
            f"or fetch the slices (python -m distill.corpus fetch-gutenberg --out {source})"
        )
    return out


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DistillError(f"{path}: not valid JSON ({err}); re-scrape it or remove the file") from None
    except RecursionError:  # json's decoder recurses once per level of [ or {
        raise DistillError(f"{path}: JSON nested too deeply to read (no article is); re-scrape it or remove the file") from None


def _gutenberg_articles(paths: list[Path], report: ConvertReport, min_words: int) -> list[Article]:
    """Every article of the given slices, continued articles joined, in reading order."""
    found: list[gutenberg.GutenbergArticle] = []
    for path in sorted(paths, key=gutenberg_slices.slice_order):
        slice_report = gutenberg.convert_slice(path)
        report.slices.append(slice_report.summary())
        found.extend(slice_report.articles)
    articles = []
    seen: collections.Counter = collections.Counter()
    for item in gutenberg.join_continued(found):
        if len(item.body.split()) < min_words:
            report.dropped["near-empty"] += 1
            continue
        seen[item.title] += 1
        articles.append(Article(item.title, item.body, f"eb1911-gutenberg/{item.title}/{seen[item.title]}"))
    return articles


def _dedupe_across_sources(groups: list[list[Article]], dropped: collections.Counter) -> list[Article]:
    """Articles of several sources, an article whose whole title an earlier source gave dropped
    (as many times as the earlier sources gave it)."""
    kept: list[Article] = []
    earlier: collections.Counter = collections.Counter()
    for articles in groups:
        here = collections.Counter(match_key(a.title) for a in articles)
        budget = collections.Counter({key: earlier[key] for key in here})
        for article in articles:
            key = match_key(article.title)
            if budget[key] > 0:
                budget[key] -= 1
                dropped["in an earlier source"] += 1
                continue
            kept.append(article)
        earlier.update(here)
    return kept


def convert_source(
    source: str | Path | list,
    fmt: str = "auto",
    *,
    min_words: int = 20,
    max_words: int | None = None,
    max_bytes: int | None = None,
    keep_incomplete: bool = False,
) -> ConvertReport:
    """Convert every raw file under ``source`` (one folder or file, or a list of them) in memory;
    see :func:`select_by_bytes` for ``max_bytes``."""
    if fmt not in FORMATS:
        raise DistillError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    sources = [Path(s) for s in source] if isinstance(source, (list, tuple)) else [Path(source)]
    report = ConvertReport()
    groups = []
    for folder in sources:
        articles: list[Article] = []
        files = _source_files(folder, fmt)
        slices = [path for path, kind in files if kind == "gutenberg"]
        for path, kind in files:
            if kind == "gutenberg":
                continue
            data = _load_json(path)
            kind = kind if kind != "json" else ("eb1810" if isinstance(data, list) else "wikisource")
            if kind == "eb1810":
                articles.extend(eb1810_articles(path, data, min_words=min_words, max_words=max_words, dropped=report.dropped))
            else:
                article = convert_wikisource_article(data, str(path), report.stats)
                if article is None:
                    report.dropped["no body text"] += 1
                elif len(article.body.split()) < min_words:
                    report.dropped["near-empty"] += 1
                elif article.incomplete and not keep_incomplete:
                    report.dropped["incomplete (missing page or section)"] += 1
                    report.incomplete.append({"title": article.title, "file": path.name, "problem": article.incomplete})
                else:
                    articles.append(article)
        if slices:
            articles.extend(_gutenberg_articles(slices, report, min_words))
        if max_words is not None:
            kept = [a for a in articles if a.key.startswith("eb1810/") or len(a.body.split()) <= max_words]
            report.dropped["longer than --max-words"] += len(articles) - len(kept)
            articles = kept
        groups.append(articles)
    report.articles = _dedupe_across_sources(groups, report.dropped) if len(groups) > 1 else groups[0]
    if max_bytes is not None:
        kept = select_by_bytes(report.articles, max_bytes)
        report.dropped["over --max-bytes"] += len(report.articles) - len(kept)
        report.articles = kept
    if not report.articles:
        raise DistillError(f"{', '.join(map(str, sources))}: no article survived conversion ({dict(report.dropped)}); check the files or lower --min-words")
    return report


def select_by_bytes(articles: list[Article], max_bytes: int) -> list[Article]:
    """A deterministic spread of whole articles whose files total at most ``max_bytes``.

    Articles are visited in the order of a hash of their key (so every volume and letter is
    represented), taken while they fit, and returned in their original order.
    """
    order = sorted(range(len(articles)), key=lambda i: hashlib.sha256(articles[i].key.encode("utf-8")).hexdigest())
    chosen, total = set(), 0
    for i in order:
        size = len(articles[i].text.encode("utf-8"))
        if total + size <= max_bytes:
            chosen.add(i)
            total += size
    return [article for i, article in enumerate(articles) if i in chosen]


def write_articles(articles: Iterable[Article], out: str | Path) -> int:
    """One ``.txt`` per article in ``out``, written as one folder: the article files an earlier run
    wrote (listed in :data:`WRITTEN`) and did not write again are removed, other files (a README,
    a user's notes) are left alone, and one that an article would overwrite is refused.
    Returns the number written."""
    out = Path(out)
    articles = list(articles)
    names = [article.filename for article in articles]
    duplicates = [name for name, count in collections.Counter(names).items() if count > 1]
    if duplicates:
        raise DistillError(f"{duplicates[0]}: two articles share this key; the source holds a duplicate title")
    with write_folder(out, (), keep_others=True, record=WRITTEN) as tmp:
        for article, name in zip(articles, names):
            (tmp / name).write_text(article.text, encoding="utf-8")
    return len(articles)


def convert(
    source: str | Path | list,
    out: str | Path,
    fmt: str = "auto",
    *,
    min_words: int = 20,
    max_words: int | None = None,
    max_bytes: int | None = None,
    keep_incomplete: bool = False,
) -> dict:
    """Convert ``source`` (a raw scrape folder, 1810 volumes, Gutenberg slices, or a list of these)
    into ``out/*.txt``; returns a summary."""
    report = convert_source(source, fmt, min_words=min_words, max_words=max_words, max_bytes=max_bytes, keep_incomplete=keep_incomplete)
    write_articles(report.articles, out)
    return report.summary()
