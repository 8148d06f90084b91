"""A small, polite MediaWiki API client (``/w/api.php``) over the corpus's one polite GET
(:mod:`distill.corpus.polite_get`).

Wikimedia's API etiquette: a descriptive User-Agent with contact details, few requests at a time,
``maxlag`` so busy servers can turn us away, and a wait when told to (429/503 with
``Retry-After``, or a ``maxlag`` error). Retries are capped; after the last one the run stops with
a one-line :class:`DistillError` that names the URL.

The contact in the User-Agent is the person running the scrape: there is no project-wide default,
and a Wikimedia host (en.wikisource.org, ...) is refused without one (``--contact``).
"""
from __future__ import annotations

from typing import Iterator
from urllib.parse import urlencode

import requests

from distill.corpus.polite_get import PoliteGet, RetryLater, check_base_url, host_of, retry_after_seconds
from distill.errors import DistillError

WIKIMEDIA_DOMAINS = ("wikisource.org", "wikipedia.org", "wikimedia.org", "wikidata.org")  # their policy asks for a contact
EXAMPLE_URL = "https://en.wikisource.org"


def is_wikimedia(base_url: str) -> bool:
    host = host_of(base_url)
    return any(host == domain or host.endswith("." + domain) for domain in WIKIMEDIA_DOMAINS)


def check_contact(base_url: str, contact: str | None) -> None:
    """DistillError when a Wikimedia host would get no contact in the User-Agent."""
    if is_wikimedia(base_url) and not (contact and contact.strip()):
        raise DistillError(
            f"--contact: required for {host_of(base_url)}; Wikimedia's User-Agent policy asks for a way to reach whoever runs "
            "the scraper: pass your e-mail address or a web page about your project, e.g. --contact you@example.org"
        )


class MediaWikiClient:
    """GET requests to ``{base_url}/w/api.php`` with a polite delay, capped retries and backoff.

    Thread-safe; the delay is shared, so ``delay`` seconds pass between the starts of any two
    requests. Set :attr:`cancelled` to stop every thread before its next request or wait.
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
        check_contact(check_base_url(base_url, EXAMPLE_URL), contact)
        self.base_url = base_url.rstrip("/")
        self.api_url = f"{self.base_url}/w/api.php"
        self.maxlag = maxlag
        self.http = PoliteGet(contact=contact, delay=delay, retries=retries, backoff=backoff, timeout=timeout,
                              headers={"Accept": "application/json", "Accept-Encoding": "gzip"},
                              resume_hint="the run resumes where it stopped")
        self.user_agent = self.http.user_agent
        self.cancelled = self.http.cancelled

    @property
    def requests_made(self) -> int:
        return self.http.requests_made

    def describe(self, params: dict) -> str:
        """The request as a URL, for error messages (long title lists shortened)."""
        shown = {k: (v if len(str(v)) <= 80 else str(v)[:77] + "...") for k, v in params.items()}
        return f"{self.api_url}?{urlencode(shown)}"

    def get(self, params: dict) -> dict:
        """The decoded JSON answer to ``params``; waits and retries on 429/5xx/maxlag/network errors."""
        params = {"format": "json", "formatversion": "2", "maxlag": str(self.maxlag), **params}
        url = self.describe(params)

        def answer(response: requests.Response) -> dict:
            if response.status_code != 200:
                raise DistillError(f"{url}: HTTP {response.status_code}; check --base-url (it must be a MediaWiki site such as {EXAMPLE_URL})")
            data = self._decode(response, url)
            error = data.get("error")
            if not error:
                return data
            if isinstance(error, dict) and error.get("code") == "maxlag":
                raise RetryLater("server lagged (maxlag)", retry_after_seconds(response), at_least=5.0)
            info = error.get("info", error) if isinstance(error, dict) else error
            raise DistillError(f"{url}: the API answered an error ({info}); check the request options")

        return self.http.get(self.api_url, answer, params=params, shown=url)

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
