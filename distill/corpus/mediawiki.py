"""A small, polite MediaWiki API client (``/w/api.php``) over ``requests``.

Wikimedia's API etiquette: a descriptive User-Agent with contact details, few requests at a time,
``maxlag`` so busy servers can turn us away, and a wait when told to (429/503 with
``Retry-After``, or a ``maxlag`` error). Retries are capped; after the last one the run stops with
a one-line :class:`DistillError` that names the URL.

The contact in the User-Agent is the person running the scrape: there is no project-wide default,
and a Wikimedia host (en.wikisource.org, ...) is refused without one (``--contact``).
"""
from __future__ import annotations

import email.utils
import threading
import time
from typing import Iterator
from urllib.parse import urlencode, urlsplit

import requests

from distill import __version__
from distill.errors import DistillError

WIKIMEDIA_DOMAINS = ("wikisource.org", "wikipedia.org", "wikimedia.org", "wikidata.org")  # their policy asks for a contact
RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_WAIT_S = 300.0  # never sleep longer than this on one Retry-After


class Cancelled(Exception):
    """Raised instead of starting a request once :attr:`MediaWikiClient.cancelled` is set."""


def user_agent(contact: str | None = None) -> str:
    """``distill-corpus/VERSION (CONTACT; purpose) python-requests/VERSION``, the form Wikimedia asks for."""
    who = f"{contact.strip()}; " if contact and contact.strip() else ""
    return f"distill-corpus/{__version__} ({who}1911 Britannica research corpus builder) python-requests/{requests.__version__}"


def is_wikimedia(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return any(host == domain or host.endswith("." + domain) for domain in WIKIMEDIA_DOMAINS)


def check_contact(base_url: str, contact: str | None) -> None:
    """DistillError when a Wikimedia host would get no contact in the User-Agent."""
    if is_wikimedia(base_url) and not (contact and contact.strip()):
        host = urlsplit(base_url).hostname
        raise DistillError(
            f"--contact: required for {host}; Wikimedia's User-Agent policy asks for a way to reach whoever runs "
            "the scraper: pass your e-mail address or a web page about your project, e.g. --contact you@example.org"
        )


def retry_after_seconds(response: requests.Response) -> float | None:
    """Seconds a 429/503 answer asks us to wait (`Retry-After` as seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class MediaWikiClient:
    """GET requests to ``{base_url}/w/api.php`` with a polite delay, capped retries and backoff.

    Thread-safe: each thread has its own ``requests.Session``; the delay is shared, so
    ``delay`` seconds pass between the starts of any two requests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        contact: str | None = None,
        delay: float = 1.0,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,
        maxlag: int = 5,
    ) -> None:
        check_contact(base_url, contact)
        self.base_url = base_url.rstrip("/")
        self.api_url = f"{self.base_url}/w/api.php"
        self.user_agent = user_agent(contact)
        self.delay, self.retries, self.backoff, self.timeout, self.maxlag = delay, retries, backoff, timeout, maxlag
        self.requests_made = 0
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._local = threading.local()
        self.cancelled = threading.Event()  # set it to stop every thread before its next request

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"User-Agent": self.user_agent, "Accept": "application/json", "Accept-Encoding": "gzip"})
            self._local.session = session
        return session

    def _wait_turn(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.delay
            self.requests_made += 1
        if start > now:
            time.sleep(start - now)

    def describe(self, params: dict) -> str:
        """The request as a URL, for error messages (long title lists shortened)."""
        shown = {k: (v if len(str(v)) <= 80 else str(v)[:77] + "...") for k, v in params.items()}
        return f"{self.api_url}?{urlencode(shown)}"

    def get(self, params: dict) -> dict:
        """The decoded JSON answer to ``params``; waits and retries on 429/5xx/maxlag/network errors."""
        params = {"format": "json", "formatversion": "2", "maxlag": str(self.maxlag), **params}
        url = self.describe(params)
        problem = "no answer"
        for attempt in range(self.retries + 1):
            self._wait_turn()
            wait = self.backoff * (2**attempt)
            try:
                response = self._session().get(self.api_url, params=params, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as err:
                problem = f"cannot reach the server ({type(err).__name__})"
            else:
                if response.status_code in RETRY_STATUS:
                    problem = f"HTTP {response.status_code}"
                    told = retry_after_seconds(response)
                    wait = told if told is not None else wait
                elif response.status_code != 200:
                    raise DistillError(f"{url}: HTTP {response.status_code}; check --base-url (it must be a MediaWiki site such as https://en.wikisource.org)")
                else:
                    data = self._decode(response, url)
                    error = data.get("error")
                    if not error:
                        return data
                    if isinstance(error, dict) and error.get("code") == "maxlag":
                        problem = "server lagged (maxlag)"
                        told = retry_after_seconds(response)
                        wait = told if told is not None else max(wait, 5.0)
                    else:
                        info = error.get("info", error) if isinstance(error, dict) else error
                        raise DistillError(f"{url}: the API answered an error ({info}); check the request options")
            if attempt < self.retries:
                time.sleep(min(wait, MAX_WAIT_S))
        raise DistillError(f"{url}: {problem} after {self.retries + 1} tries; check --base-url and your network, or try again later (the run resumes where it stopped)")

    @staticmethod
    def _decode(response: requests.Response, url: str) -> dict:
        try:
            data = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "unknown content")
            raise DistillError(f"{url}: the answer is not MediaWiki API JSON ({kind}); check --base-url points at a MediaWiki site") from None
        if not isinstance(data, dict):
            raise DistillError(f"{url}: the answer is not MediaWiki API JSON (a {type(data).__name__}); check --base-url")
        return data

    def list_prefix(self, prefix: str, namespace: int = 0) -> Iterator[str]:
        """Titles starting with ``prefix`` (``list=allpages``, redirects left out), following
        ``continue`` tokens page by page."""
        params = {"action": "query", "list": "allpages", "apprefix": prefix, "apnamespace": str(namespace), "aplimit": "max", "apfilterredir": "nonredirects"}
        cont: dict = {}
        while True:
            data = self.get({**params, **cont})
            try:
                pages = data["query"]["allpages"]
                titles = [page["title"] for page in pages]
            except (KeyError, TypeError):
                raise DistillError(f"{self.describe(params)}: the answer has no query.allpages list; check --base-url points at a MediaWiki site") from None
            yield from titles
            cont = data.get("continue") or {}
            if not isinstance(cont, dict) or not cont:
                return

    def wikitext(self, titles: list[str]) -> dict[str, str | None]:
        """Current wikitext of up to 50 ``titles`` in one request; None for a missing page."""
        params = {"action": "query", "prop": "revisions", "rvprop": "content", "rvslots": "main", "titles": "|".join(titles)}
        data = self.get(params)
        try:
            query = data["query"]
            pages = query["pages"]
            renamed = {item["to"]: item["from"] for item in query.get("normalized", [])}
            out: dict[str, str | None] = {title: None for title in titles}
            for page in pages:
                title = renamed.get(page["title"], page["title"])
                if page.get("missing") or page.get("invalid") or not page.get("revisions"):
                    out[title] = None
                    continue
                revision = page["revisions"][0]
                content = revision["slots"]["main"]["content"] if "slots" in revision else revision.get("content")
                out[title] = content if isinstance(content, str) else None
        except (KeyError, TypeError, IndexError):
            raise DistillError(f"{self.describe(params)}: the answer has no query.pages with revisions; check --base-url points at a MediaWiki site") from None
        return out
