"""Scrape 1911 Britannica articles from WikiSource through the MediaWiki API.

Why wikitext and not rendered HTML: an article page such as ``1911 Encyclopædia
Britannica/Abbey`` only transcludes sections of scanned pages (``<pages index="EB1911 - Volume
01.djvu" from=42 to=43 fromsection=s3 tosection=s1 />``). Fetching the article's wikitext and the
``Page:`` wikitext it names gives the full text with exact section boundaries, page headers and
footers already set apart in ``<noinclude>``, 50 titles per request (about 1,500 requests for the
whole encyclopaedia instead of one per article), and raw files that ``convert`` can re-read when
its rules improve. ``convert`` also reads rendered ``html`` records should anyone store those.

One JSON per article: ``{title, url, volume, wikitext, pages: {Page title: wikitext}, fetched_at,
source}``, written atomically, so a stopped run leaves only whole files and the next run skips them.
"""
from __future__ import annotations

import functools
import itertools
import re
import threading
import unicodedata
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote

from distill.atomic import atomic_write_json
from distill.corpus.mediawiki import MediaWikiClient
from distill.corpus.naming import ARTICLE_PREFIX, article_filename
from distill.corpus.wikitext_pages import page_titles, volume_of
from distill.errors import DistillError

DEFAULT_BASE_URL = "https://en.wikisource.org"
API_BATCH = 50  # the MediaWiki API's limit on titles per query for ordinary clients

# Pages under the prefix that are not articles: volume lists, indexes, front matter.
_NOT_ARTICLE = re.compile(
    r"^(volume|vol\.)\s*\d+|^(index|contributors|list of (articles|contributors)|prefatory note|preface|errata|(table of )?contents|introduction)\b",
    re.IGNORECASE,
)


def is_article_title(title: str, prefix: str = ARTICLE_PREFIX) -> bool:
    """True for ``1911 Encyclopædia Britannica/<Article>``; False for other namespaces (Author:,
    Portal:, File:, ...), other works, volume and index pages, and subpages (``.../Abbey/Plan``)."""
    if not title.startswith(prefix):
        return False
    rest = title[len(prefix):].strip()
    return bool(rest) and "/" not in rest and "#" not in rest and not _NOT_ARTICLE.match(rest)


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control and format characters (ESC, BEL, CR, NEL, bidi
    overrides, ...) written as ``\\x1b``-style escapes, so a title from the server cannot drive it."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)


def article_url(base_url: str, title: str) -> str:
    return f"{base_url.rstrip('/')}/wiki/{quote(title.replace(' ', '_'), safe='/:(),!')}"


@dataclass
class ScrapeResult:
    listed: int = 0  # titles the listing returned
    non_article: int = 0  # of those, not 1911 Britannica articles
    already: int = 0  # articles stored by an earlier run, not fetched again
    stored: int = 0  # articles fetched and stored by this run
    missing: int = 0  # listed but gone by the time they were fetched
    other_volume: int = 0  # fetched but not in --volume
    requests: int = 0  # HTTP requests made (retries included)

    def as_dict(self) -> dict:
        return asdict(self)


class PageCache:
    """``Page:`` wikitext shared by the worker threads: each page is fetched once per run, even
    when two articles on it are fetched at the same time. Keeps the most recent ``keep`` pages."""

    def __init__(self, client: MediaWikiClient, keep: int = 4096) -> None:
        self.client, self.keep = client, keep
        self._lock = threading.Lock()
        self._done: OrderedDict[str, str | None] = OrderedDict()
        self._inflight: dict[str, Future] = {}

    def get_many(self, titles: Iterable[str]) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        mine: list[str] = []
        theirs: dict[str, Future] = {}
        with self._lock:
            for title in dict.fromkeys(titles):
                if title in self._done:
                    self._done.move_to_end(title)
                    result[title] = self._done[title]
                elif title in self._inflight:
                    theirs[title] = self._inflight[title]
                else:
                    self._inflight[title] = Future()
                    mine.append(title)
        try:
            for start in range(0, len(mine), API_BATCH):
                chunk = mine[start : start + API_BATCH]
                got = self.client.wikitext(chunk)
                with self._lock:
                    for title in chunk:
                        result[title] = self._done[title] = got.get(title)
                        self._inflight.pop(title).set_result(got.get(title))
                    while len(self._done) > self.keep:
                        self._done.popitem(last=False)
        except BaseException as err:
            with self._lock:
                for title in mine:
                    future = self._inflight.pop(title, None)
                    if future is not None:
                        future.set_exception(err)
            raise
        for title, future in theirs.items():
            result[title] = future.result()
        return result


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while True:
        batch = list(itertools.islice(items, size))
        if not batch:
            return
        yield batch


# What one fetched title came to: (title, its record or None, "stored" / "missing" / "other_volume").
_Outcome = tuple[str, dict | None, str]


def scrape(
    out: str | Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    limit: int | None = None,
    volume: int | None = None,
    concurrency: int = 2,
    delay: float = 1.0,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    batch_size: int = 20,
    contact: str | None = None,
    progress: Callable[[str, Path], None] | None = None,
) -> ScrapeResult:
    """Fetch 1911 Britannica articles into ``out`` (one JSON each), skipping stored ones.

    ``limit``: only the first ``limit`` article titles of the listing (with ``volume``: at most
    ``limit`` new articles of that volume this run). ``volume``: keep only articles transcluding
    pages of that volume (known once an article's wikitext is fetched, so other volumes' articles
    cost one shared request per ``batch_size`` titles on every run). ``progress(title, path)`` is
    called after each stored article.
    """
    if concurrency < 1 or batch_size < 1 or retries < 0 or delay < 0:
        raise DistillError("--concurrency and --batch-size must be 1 or more, --retries and --delay 0 or more")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistillError(f"{out}: exists and is not a folder; give a folder for the scraped articles")
    client = MediaWikiClient(base_url, contact=contact, delay=delay, retries=retries, backoff=backoff, timeout=timeout)
    out.mkdir(parents=True, exist_ok=True)
    result = ScrapeResult()
    stored_names = {path.name for path in out.glob("*.json")}
    # Without a volume the limit cuts the listing; with one it counts the articles stored.
    titles = _titles_to_fetch(client, stored_names, result, limit if volume is None else None)
    pages = PageCache(client)
    fetch = functools.partial(_fetch_batch, client=client, pages=pages, base_url=base_url, volume=volume)
    try:
        _fetch_and_store(
            _batches(titles, min(batch_size, API_BATCH)), fetch, client.cancelled, out, result,
            concurrency=concurrency, store_limit=limit if volume is not None else None, progress=progress,
        )
    finally:
        result.requests = client.requests_made
    return result


def _titles_to_fetch(client: MediaWikiClient, stored_names: set[str], result: ScrapeResult, limit: int | None) -> Iterator[str]:
    """Article titles of the listing not stored yet, up to the first ``limit`` articles; counts the rest in ``result``."""
    seen = 0
    for title in client.list_prefix(ARTICLE_PREFIX):
        result.listed += 1
        if not is_article_title(title):
            result.non_article += 1
            continue
        if limit is not None and seen >= limit:
            return
        seen += 1
        if article_filename(title) in stored_names:
            result.already += 1
            continue
        yield title


def _fetch_batch(titles: list[str], *, client: MediaWikiClient, pages: PageCache, base_url: str, volume: int | None) -> list[_Outcome]:
    """Fetch the wikitext of ``titles`` and of the pages they transclude; nothing once the run is stopping."""
    if client.cancelled.is_set():
        return []
    texts = client.wikitext(titles)
    kept, outcome = [], []
    for title in titles:
        wikitext = texts.get(title)
        if wikitext is None:
            outcome.append((title, None, "missing"))
        elif volume is not None and volume_of(wikitext) != volume:
            outcome.append((title, None, "other_volume"))
        else:
            kept.append((title, wikitext))
    needed = pages.get_many(t for _, wikitext in kept for t in page_titles(wikitext))
    fetched_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for title, wikitext in kept:
        record = {
            "title": title,
            "url": article_url(base_url, title),
            "volume": volume_of(wikitext),
            "wikitext": wikitext,
            "pages": {t: needed.get(t) for t in page_titles(wikitext)},
            "fetched_at": fetched_at,
            "source": client.base_url,
        }
        outcome.append((title, record, "stored"))
    return outcome


def _fetch_and_store(
    batches: Iterator[list[str]],
    fetch: Callable[[list[str]], list[_Outcome]],
    stop: threading.Event,
    out: Path,
    result: ScrapeResult,
    *,
    concurrency: int,
    store_limit: int | None,
    progress: Callable[[str, Path], None] | None,
) -> None:
    """Run ``fetch`` on ``concurrency`` threads, at most one batch each, and store what each returns.

    ``stop`` is set when this ends or fails (Ctrl-C included), so no thread starts another request
    and a thread waiting on a ``Retry-After`` wakes at once: the pool shuts down without waiting it out.
    """

    def limit_reached() -> bool:
        return store_limit is not None and result.stored >= store_limit

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="scrape")
    pending: set[Future] = set()
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < concurrency and not limit_reached():
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                else:
                    pending.add(pool.submit(fetch, batch))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                for title, record, what in future.result():
                    if record is None:
                        setattr(result, what, getattr(result, what) + 1)
                        continue
                    if limit_reached():
                        break
                    path = out / article_filename(title)
                    atomic_write_json(path, record)
                    result.stored += 1
                    if progress is not None:
                        progress(title, path)
    finally:
        stop.set()
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
