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

import itertools
import re
import threading
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
from distill.corpus.wikitext import page_titles, volume_of
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
    batch_size = min(batch_size, API_BATCH)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistillError(f"{out}: exists and is not a folder; give a folder for the scraped articles")
    client = MediaWikiClient(base_url, contact=contact, delay=delay, retries=retries, backoff=backoff, timeout=timeout)
    out.mkdir(parents=True, exist_ok=True)
    stop = client.cancelled  # set when the run ends or fails: no thread starts another request
    pages = PageCache(client)
    stored_names = {path.name for path in out.glob("*.json")}
    result = ScrapeResult()

    def titles_to_fetch() -> Iterator[str]:
        seen = 0
        for title in client.list_prefix(ARTICLE_PREFIX):
            result.listed += 1
            if not is_article_title(title):
                result.non_article += 1
                continue
            if limit is not None and volume is None and seen >= limit:
                return
            seen += 1
            if article_filename(title) in stored_names:
                result.already += 1
                continue
            yield title

    def fetch_batch(titles: list[str]) -> list[tuple[str, dict | None, str]]:
        if stop.is_set():
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

    def limit_reached() -> bool:
        return volume is not None and limit is not None and result.stored >= limit

    batches = _batches(titles_to_fetch(), batch_size)
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
                    pending.add(pool.submit(fetch_batch, batch))
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
        result.requests = client.requests_made
    return result
