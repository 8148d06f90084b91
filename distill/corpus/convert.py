"""Raw articles to one plain-text file per article (title on the first line, then the body).

Two raw forms are read:

* ``wikisource``: what ``scrape`` stores, one JSON per article with ``title`` and ``wikitext``
  plus the transcluded ``pages`` (or a rendered ``html`` page instead of wikitext);
* ``eb1810``: the 1810 edition's volume files, lists of ``{"h": headword, "t": article HTML,
  "sp": start page, "ep": end page}``; front/back matter, index lists, near-empty entries and
  entries whose headword is a cut sentence (a mis-split of a long article) are dropped, every
  other entry is kept whole.

Every input is converted in memory first, so a bad file stops the run before anything is written.
"""
from __future__ import annotations

import collections
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from distill.atomic import atomic_write_text
from distill.corpus.htmltext import eb1810_html_to_text, rendered_html_to_text
from distill.corpus.naming import display_title, safe_filename
from distill.corpus.wikitext import ConvertStats, assemble_article, wikitext_to_text
from distill.errors import DistillError

FORMATS = ("auto", "wikisource", "eb1810")
_OUR_TEXT_FILE = re.compile(r"^[a-z0-9-]+-[0-9a-f]{10}\.txt$")
# Headwords that are really a sentence cut out of a long article ("THIS IS BY NO").
_FRAGMENT_END = {"A", "AN", "AND", "AS", "BE", "BY", "FOR", "FROM", "IN", "IS", "NO", "OF", "ON", "THAT", "THE", "THIS", "TO", "WITH"}
_EB1810_MATTER = re.compile(r"^(END OF|EXPLANATION OF THE PLATE|DIRECTIONS FOR|ERRATA|INDEX\b|CONTENTS\b)", re.IGNORECASE)


@dataclass
class Article:
    """One converted article: the title line, the body, and the key its file name is hashed from."""

    title: str
    body: str
    key: str

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

    def summary(self) -> dict:
        return {
            "articles": len(self.articles),
            "words": sum(len(a.text.split()) for a in self.articles),
            "bytes": sum(len(a.text.encode("utf-8")) for a in self.articles),
            "dropped": dict(sorted(self.dropped.items())),
            "missing_pages": self.stats.missing_pages,
            "missing_sections": self.stats.missing_sections,
            "unknown_templates": dict(self.stats.unknown_templates.most_common(10)),
        }


def convert_wikisource_article(data: object, source: str, stats: ConvertStats | None = None) -> Article | None:
    """One scraped article JSON to an :class:`Article`; None when it has no body text."""
    stats = stats if stats is not None else ConvertStats()
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
        body = wikitext_to_text(assemble_article(data["wikitext"], pages, stats), stats)
    else:
        body = rendered_html_to_text(data["html"], source)
    if not body.strip():
        return None
    return Article(display_title(data["title"]), body, data["title"])


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


def _json_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DistillError(f"{source}: not found; give a folder of scraped .json articles or 1810 volume files")
    files = sorted(source.glob("*.json"))
    if not files:
        raise DistillError(f"{source}: holds no .json files; scrape into it first (python -m distill.corpus scrape --out {source})")
    return files


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DistillError(f"{path}: not valid JSON ({err}); re-scrape it or remove the file") from None


def convert_source(source: str | Path, fmt: str = "auto", *, min_words: int = 20, max_words: int | None = None, max_bytes: int | None = None) -> ConvertReport:
    """Convert every raw file under ``source`` in memory; see :func:`select_by_bytes` for ``max_bytes``."""
    if fmt not in FORMATS:
        raise DistillError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    source = Path(source)
    report = ConvertReport()
    for path in _json_files(source):
        data = _load_json(path)
        kind = fmt if fmt != "auto" else ("eb1810" if isinstance(data, list) else "wikisource")
        if kind == "eb1810":
            report.articles.extend(eb1810_articles(path, data, min_words=min_words, max_words=max_words, dropped=report.dropped))
        else:
            article = convert_wikisource_article(data, str(path), report.stats)
            if article is None:
                report.dropped["no body text"] += 1
            elif len(article.body.split()) < min_words:
                report.dropped["near-empty"] += 1
            else:
                report.articles.append(article)
    if max_bytes is not None:
        kept = select_by_bytes(report.articles, max_bytes)
        report.dropped["over --max-bytes"] += len(report.articles) - len(kept)
        report.articles = kept
    if not report.articles:
        raise DistillError(f"{source}: no article survived conversion ({dict(report.dropped)}); check the files or lower --min-words")
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
    """One ``.txt`` per article in ``out`` (atomic writes); earlier article files not written again
    are removed, other files (a README) are left alone. Returns the number written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistillError(f"{out}: exists and is not a folder; give a folder for the article text files")
    articles = list(articles)
    names = [article.filename for article in articles]
    duplicates = [name for name, count in collections.Counter(names).items() if count > 1]
    if duplicates:
        raise DistillError(f"{duplicates[0]}: two articles share this key; the source holds a duplicate title")
    out.mkdir(parents=True, exist_ok=True)
    for article, name in zip(articles, names):
        atomic_write_text(out / name, article.text)
    keep = set(names)
    for path in out.iterdir():
        if _OUR_TEXT_FILE.match(path.name) and path.name not in keep:
            path.unlink()
    return len(articles)


def convert(source: str | Path, out: str | Path, fmt: str = "auto", *, min_words: int = 20, max_words: int | None = None, max_bytes: int | None = None) -> dict:
    """Convert ``source`` (raw scrape folder or 1810 volumes) into ``out/*.txt``; returns a summary."""
    report = convert_source(source, fmt, min_words=min_words, max_words=max_words, max_bytes=max_bytes)
    write_articles(report.articles, out)
    return report.summary()
