"""A real HTTP server on 127.0.0.1, in a thread, for the tests of commands that download.

The fake sites (``fake_wikisource.FakeWikiSource``, ``test_gutenberg_fetch.FakeGutenberg``)
subclass it and give ``_handler()``; ``with Site(...) as site:`` serves at ``site.url``.
A helper module, not a conftest: the top-level ``tests/conftest.py`` is imported by name.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


class LocalServer:
    def _serve(self) -> None:
        """Bind a free port (``self.url``); the server runs inside ``with``. A short poll interval
        lets each test's server shut down at once."""
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
