"""A local WikiSource: a MediaWiki-API-shaped HTTP server on 127.0.0.1 serving the fixtures in
``tests/assets/wikisource/`` (real Page: wikitext, trimmed), and counting every request.

A helper module, not a conftest: the top-level ``tests/conftest.py`` is imported by name.
"""
from __future__ import annotations

import collections
import json
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from local_server import LocalServer, QuietHandler  # tests/corpus/local_server.py

WIKISOURCE = Path(__file__).resolve().parent.parent / "assets" / "wikisource"


class FakeWikiSource(LocalServer):
    """``/w/api.php`` answering ``list=allpages`` (paged with ``continue``) and
    ``prop=revisions`` (wikitext of articles and Page: pages).

    ``fail_once``: titles whose first revisions request answers 503 with ``Retry-After: 0``.
    ``die_after``: after that many requests every answer is a 500.
    ``html``: answer every request with an HTML page (a server that is not MediaWiki).
    """

    def __init__(self, *, page_size: int = 4, fail_once=(), die_after: int | None = None, html: bool = False) -> None:
        data = json.loads((WIKISOURCE / "articles.json").read_text(encoding="utf-8"))
        self.listing: list[str] = data["listing"]
        self.content: dict[str, str] = {**data["articles"], **json.loads((WIKISOURCE / "pages.json").read_text(encoding="utf-8"))}
        self.page_size, self.die_after, self.html = page_size, die_after, html
        self.fail_once = set(fail_once)
        self.requests: list[dict] = []
        self.user_agents: set[str] = set()
        self.lock = threading.Lock()
        self._serve()

    def revision_requests(self) -> collections.Counter:
        """How many revisions requests named each title."""
        counts: collections.Counter = collections.Counter()
        for params in self.requests:
            if params.get("prop") == "revisions":
                counts.update(params["titles"].split("|"))
        return counts

    def answer(self, params: dict) -> tuple[int, dict, str]:
        with self.lock:
            self.requests.append(params)
            count = len(self.requests)
            if self.die_after is not None and count > self.die_after:
                return 500, {}, "internal error"
            if self.html:
                return 200, {"Content-Type": "text/html"}, "<html><body><h1>Not a wiki</h1></body></html>"
            titles = params.get("titles", "").split("|") if params.get("titles") else []
            failing = self.fail_once.intersection(titles)
            if failing:
                self.fail_once -= failing
                return 503, {"Retry-After": "0"}, "busy"
        if params.get("list") == "allpages":
            start = int(params.get("apcontinue", 0))
            chunk = self.listing[start : start + self.page_size]
            body: dict = {"batchcomplete": True, "query": {"allpages": [{"pageid": start + i + 1, "ns": 0, "title": t} for i, t in enumerate(chunk)]}}
            if start + self.page_size < len(self.listing):
                body["continue"] = {"apcontinue": str(start + self.page_size), "continue": "-||"}
            return 200, {}, json.dumps(body)
        if params.get("prop") == "revisions":
            pages = []
            for title in titles:
                if title in self.content:
                    pages.append({"pageid": abs(hash(title)) % 10**6, "ns": 104 if title.startswith("Page:") else 0, "title": title,
                                  "revisions": [{"slots": {"main": {"contentmodel": "wikitext", "contentformat": "text/x-wiki", "content": self.content[title]}}}]})
                else:
                    pages.append({"ns": 0, "title": title, "missing": True})
            return 200, {}, json.dumps({"batchcomplete": True, "query": {"pages": pages}})
        return 200, {}, json.dumps({"error": {"code": "badvalue", "info": "unsupported request"}})

    def _handler(self):
        fake = self

        class Handler(QuietHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                fake.user_agents.add(self.headers.get("User-Agent", ""))
                if url.path != "/w/api.php":
                    self.send_error(404)
                    return
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                status, headers, body = fake.answer(params)
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json; charset=utf-8"))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)


        return Handler


