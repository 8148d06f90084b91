"""One polite GET for every download of the corpus: WikiSource's API (``mediawiki.py``) and Project
Gutenberg's files (``gutenberg_fetch.py``).

Polite: a descriptive User-Agent naming whoever runs it (``--contact``), ``delay`` seconds between
the starts of any two requests (across threads), and capped retries with exponential backoff on
what may pass: connection errors, timeouts, bodies cut short or garbled on the way (a
``ChunkedEncodingError``, ``ContentDecodingError`` or ``IncompleteRead``, or fewer bytes than the
``Content-Length``), 429 and 5xx, honouring ``Retry-After``. Redirects are capped
(:data:`MAX_REDIRECTS`). Whatever cannot pass ends as one :class:`DistillError` line naming the URL.

Every wait (the delay, a backoff, a ``Retry-After`` of minutes) is on :attr:`PoliteGet.cancelled`,
so setting it wakes all threads at once (they raise :class:`Cancelled`), and Ctrl-C in the main
thread interrupts it at once.
"""
from __future__ import annotations

import email.utils
import http.client
import math
import threading
import time
from typing import Callable, TypeVar
from urllib.parse import urlsplit

import requests

from distill import __version__
from distill.errors import DistillError

MAX_WAIT_S = 300.0  # never wait longer than this on one Retry-After
MAX_REDIRECTS = 5  # a site that needs more is misconfigured or loops
_UNREACHABLE = (requests.ConnectionError, requests.Timeout)
_CUT_SHORT = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError, http.client.IncompleteRead)

T = TypeVar("T")


class Cancelled(Exception):
    """Raised instead of starting or waiting for a request once :attr:`PoliteGet.cancelled` is set."""


class RetryLater(Exception):
    """Raised by an ``answer`` callback of :meth:`PoliteGet.get` for an answer to ask again for
    (e.g. MediaWiki's ``maxlag``): ``problem`` for the final error, ``wait`` seconds when the server
    said (else the backoff, at least ``at_least``)."""

    def __init__(self, problem: str, wait: float | None = None, at_least: float = 0.0):
        super().__init__(problem)
        self.problem, self.wait, self.at_least = problem, wait, at_least


def user_agent(contact: str | None = None) -> str:
    """``distill-corpus/VERSION (CONTACT; purpose) python-requests/VERSION``, the form Wikimedia asks for.
    DistillError for a contact an HTTP header cannot carry (control characters, non-ASCII)."""
    if contact and not (contact.isascii() and contact.isprintable()):
        raise DistillError(f"--contact: {contact!r} cannot go in an HTTP header; give printable ASCII, e.g. you@example.org or https://example.org/me")
    who = f"{contact.strip()}; " if contact and contact.strip() else ""
    return f"distill-corpus/{__version__} ({who}1911 Britannica research corpus builder) python-requests/{requests.__version__}"


def host_of(url: str) -> str:
    """The host name of ``url``, lower case, without the trailing dot a fully qualified name may have."""
    return (urlsplit(url).hostname or "").rstrip(".").lower()


def check_base_url(url: str, example: str) -> str:
    """``url`` when it is an http(s) address with a host; else DistillError naming ``--base-url``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host_of(url):
        raise DistillError(f"--base-url: {url!r} is not an http(s) address; give e.g. {example}")
    return url


def check_timeout(seconds: float) -> float:
    """``seconds`` when it is a usable request timeout; else DistillError naming ``--timeout``."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise DistillError(f"--timeout: {seconds} is not a number of seconds above 0; give e.g. 30")
    return seconds


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
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _cut_short(response: requests.Response) -> str | None:
    """How much of the body came when it is shorter than its ``Content-Length``, else None."""
    length = response.headers.get("Content-Length", "")
    encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    if length.isdigit() and not encoded and len(response.content) < int(length):
        return f"{len(response.content)} of {length} bytes"
    return None


class PoliteGet:
    """GET requests with a shared delay between request starts, capped retries and backoff.

    Thread-safe: each thread has its own ``requests.Session``. ``resume_hint`` ends the message of
    a request that failed every try (what a rerun does).
    """

    def __init__(self, *, contact: str | None = None, delay: float = 1.0, retries: int = 5, backoff: float = 1.0,
                 timeout: float = 30.0, headers: dict[str, str] | None = None, resume_hint: str = "a rerun resumes") -> None:
        self.delay, self.retries, self.backoff, self.timeout = delay, retries, backoff, check_timeout(timeout)
        self.user_agent = user_agent(contact)
        self.headers = {"User-Agent": self.user_agent, **(headers or {})}
        self.resume_hint = resume_hint
        self.requests_made = 0
        self.cancelled = threading.Event()  # set it to stop every thread before its next request or wait
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self.headers)
            session.max_redirects = MAX_REDIRECTS
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or raise :class:`Cancelled` as soon as :attr:`cancelled` is set."""
        if self.cancelled.wait(max(0.0, seconds)):
            raise Cancelled()

    def _wait_turn(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.delay
            self.requests_made += 1
        self.sleep(start - now)

    def get(self, url: str, answer: Callable[[requests.Response], T], *, params: dict | None = None, shown: str | None = None) -> T:
        """``answer(response)`` for the first answer that is not a 429 or 5xx, retrying what may pass
        (see the module); ``answer`` may raise :class:`RetryLater`. ``shown``: the URL for messages."""
        shown = shown or url
        problem = "no answer"
        for attempt in range(self.retries + 1):
            self._wait_turn()
            wait = self.backoff * (2 ** min(attempt, 20))
            try:
                response = self._session().get(url, params=params, timeout=self.timeout)
                short = _cut_short(response)
            except requests.TooManyRedirects:
                raise DistillError(f"{shown}: more than {MAX_REDIRECTS} redirects (a redirect loop?); check --base-url") from None
            except _UNREACHABLE as err:
                problem = f"cannot reach the server ({type(err).__name__})"
            except _CUT_SHORT as err:
                problem = f"the answer was cut short or garbled ({type(err).__name__})"
            except requests.RequestException as err:
                raise DistillError(f"{shown}: cannot be requested ({type(err).__name__}); check --base-url") from None
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    problem = f"HTTP {status}"
                    told = retry_after_seconds(response)
                    wait = told if told is not None else wait
                elif short is not None:
                    problem = f"the answer was cut short ({short})"
                else:
                    try:
                        return answer(response)
                    except RetryLater as later:
                        problem = later.problem
                        wait = later.wait if later.wait is not None else max(wait, later.at_least)
            if attempt < self.retries:
                self.sleep(min(wait, MAX_WAIT_S))
        raise DistillError(f"{shown}: {problem} after {self.retries + 1} tries; check --base-url and your network, or try again later ({self.resume_hint})")
