"""The scraper and the Gutenberg fetcher against servers that misbehave, over real HTTP on
127.0.0.1: bodies cut short, redirect loops, long Retry-After waits cut by Ctrl-C, bad arguments,
hostile titles. Every fault ends in a retry, or in one line on stderr with a known exit code."""
from __future__ import annotations

import gzip
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "corpus"))  # the local sites of tests/corpus/
from conftest import REPO, free_port, subprocess_env  # noqa: E402
from fake_wikisource import FakeWikiSource  # noqa: E402  tests/corpus/fake_wikisource.py
from test_gutenberg_fetch import FakeGutenberg  # noqa: E402  tests/corpus/test_gutenberg_fetch.py

from distill.corpus.__main__ import main  # noqa: E402
from distill.corpus.gutenberg_fetch import GutenbergText, body_words, fetch_gutenberg  # noqa: E402
from distill.corpus.scrape import scrape  # noqa: E402

FAST = {"delay": 0.0, "backoff": 0.01, "timeout": 5.0}
ARTICLES = json.loads((REPO / "tests" / "assets" / "wikisource" / "articles.json").read_text(encoding="utf-8"))["articles"]
TEXT = "\r\n".join(["*** START OF THIS PROJECT GUTENBERG EBOOK 5001 ***", "ABBEY, a monastery.", "*** END OF THIS PROJECT GUTENBERG EBOOK 5001 ***"]) + "\r\n"
ENTRY = GutenbergText("volume-02-slice-01.txt.gz", 2, "1", 5001, "articles", "Fake slice", body_words(TEXT), hashlib.sha256(TEXT.encode("utf-8")).hexdigest())
LATIN1_PATH = "/files/5001/5001-8.txt"


def send_fault(handler, fault) -> None:
    """Answer ``handler``'s request with ``fault``: ``"short"`` (a Content-Length 100 bytes more than
    is sent, then the connection closes), ``"bad-gzip"`` (``Content-Encoding: gzip`` over bytes that
    are not gzip), ``"loop"`` (a redirect to the same URL) or ``(status, headers)``."""
    body = b'{"batchcomplete": true, "query": {"pages": []}}'
    if fault == "short":
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body) + 100))
        handler.end_headers()
        handler.wfile.write(body[:20])
        handler.close_connection = True
        return
    if fault == "loop":
        status, headers, body = 302, {"Location": handler.path}, b""
    elif fault == "bad-gzip":
        status, headers, body = 200, {"Content-Encoding": "gzip"}, b"this is not gzip at all"
    else:
        status, headers = fault
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class FaultsFirst:
    """A local site (mixed in before it) that answers a request with ``self.fault_for(path)``,
    when that is not None, instead of the real answer."""

    def _handler(self):
        fake, base = self, super()._handler()

        class Handler(base):
            def do_GET(self):  # noqa: N802 (http.server's name)
                fault = fake.fault_for(self.path)
                if fault is None:
                    super().do_GET()
                else:
                    send_fault(self, fault)

        return Handler


class FaultyWikiSource(FaultsFirst, FakeWikiSource):
    """The local WikiSource, with faults: ``revisions`` are given, in turn, to the first revisions
    requests; ``always`` to every request."""

    def __init__(self, *, revisions=(), always=None, **kwargs) -> None:
        self.revision_faults, self.always = list(revisions), always
        super().__init__(**kwargs)

    def fault_for(self, path: str):
        params = {k: v[0] for k, v in parse_qs(urlparse(path).query).items()}
        with self.lock:
            if self.always is not None:
                fault = self.always
            elif params.get("prop") == "revisions" and self.revision_faults:
                fault = self.revision_faults.pop(0)
            else:
                return None
            self.requests.append(params)
            return fault


class FaultyGutenberg(FaultsFirst, FakeGutenberg):
    """Serves :data:`TEXT` as Project Gutenberg's Latin-1 file of ebook 5001; ``faults`` are given,
    in turn, to the first requests; ``always`` to every request."""

    def __init__(self, faults=(), always=None) -> None:
        self.faults, self.always = list(faults), always
        super().__init__({LATIN1_PATH: TEXT.encode("latin-1")})

    def fault_for(self, path: str):
        with self.lock:
            fault = self.always or (self.faults.pop(0) if self.faults else None)
            if fault is not None:
                self.requests.append(path)
            return fault


def stored_titles(folder: Path) -> set[str]:
    return {json.loads(p.read_text(encoding="utf-8"))["title"] for p in folder.glob("*.json")}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


FAULTS = ["short", "bad-gzip", (520, {}), (503, {"Retry-After": "0"})]


def test_the_scraper_retries_cut_short_bodies_bad_gzip_and_5xx(tmp_path):
    out = tmp_path / "raw"
    with FaultyWikiSource(revisions=FAULTS) as site:
        result = scrape(out, base_url=site.url, concurrency=1, batch_size=50, **FAST)
    assert stored_titles(out) == set(ARTICLES) and result.stored == len(ARTICLES)
    assert result.requests == len(site.requests)


def test_the_fetcher_retries_cut_short_bodies_bad_gzip_and_5xx(tmp_path):
    with FaultyGutenberg(FAULTS) as site:
        summary = fetch_gutenberg(tmp_path, base_url=site.url, catalog=[ENTRY], **FAST)
    assert site.requests == [LATIN1_PATH] * 5 and summary["fetched"] == 1 and summary["checksum_mismatch"] == []
    assert gzip.decompress((tmp_path / ENTRY.file).read_bytes()).decode("utf-8") == TEXT


def test_a_redirect_loop_is_one_line_exit_2_after_a_few_requests(tmp_path, capsys):
    with FaultyWikiSource(always="loop") as site:
        code = main(["scrape", "--out", str(tmp_path / "raw"), "--base-url", site.url, "--delay", "0"])
        asked = len(site.requests)
    err = one_error_line(capsys)
    assert code == 2 and "redirect" in err and f"{site.url}/w/api.php" in err and asked <= 6
    with FaultyGutenberg(always="loop") as site:
        code = main(["fetch-gutenberg", "--out", str(tmp_path / "pg"), "--base-url", site.url, "--delay", "0", "--limit", "1"])
        asked = len(site.requests)
    err = one_error_line(capsys)
    assert code == 2 and "redirect" in err and asked <= 6


@pytest.mark.parametrize("command", ["scrape", "fetch-gutenberg"])
@pytest.mark.parametrize("option, value", [
    ("--base-url", "en.wikisource.org"), ("--base-url", "localhost:8000"), ("--base-url", "ftp://mirror.example.org"),
    ("--base-url", ""), ("--base-url", "http://"), ("--timeout", "0"), ("--timeout", "-1"), ("--timeout", "nan"), ("--timeout", "inf"),
])
def test_a_bad_base_url_or_timeout_is_refused_as_an_argument(tmp_path, capsys, command, option, value):
    closed = f"http://127.0.0.1:{free_port()}"
    args = [command, "--out", str(tmp_path / "out"), "--base-url", closed, "--contact", "me@example.org", "--retries", "0", "--delay", "0"]
    code = main([*args, option, value])
    err = one_error_line(capsys)
    assert code == 2 and f"argument {option}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["scrape", "fetch-gutenberg"])
@pytest.mark.parametrize("contact", ["李@example.org", "me@example.org\r\nX-Evil: 1"])
def test_a_contact_no_header_can_carry_is_one_line_exit_2(tmp_path, capsys, command, contact):
    code = main([command, "--out", str(tmp_path / "out"), "--base-url", f"http://127.0.0.1:{free_port()}", "--contact", contact, "--retries", "0"])
    err = one_error_line(capsys)
    assert code == 2 and err.startswith("error: --contact: ") and "printable ASCII" in err
    assert not (tmp_path / "out").exists()


def test_the_contact_check_sees_a_host_written_with_a_trailing_dot(tmp_path, capsys):
    for url in ["https://en.wikisource.org.", "https://EN.WIKISOURCE.ORG./"]:
        code = main(["scrape", "--out", str(tmp_path / "raw"), "--base-url", url, "--retries", "0", "--delay", "0"])
        err = one_error_line(capsys)
        assert code == 2 and err.startswith("error: --contact: required for en.wikisource.org"), err
    assert not (tmp_path / "raw").exists()


def test_titles_are_printed_with_control_characters_escaped(tmp_path, capsys):
    evil = "1911 Encyclopædia Britannica/Abbey\x1b[2J\x1b]0;owned\x07\r\u0085"
    with FakeWikiSource() as site:
        site.listing.insert(0, evil)
        site.content[evil] = site.content[next(iter(ARTICLES))]
        code = main(["scrape", "--out", str(tmp_path / "raw"), "--base-url", site.url, "--delay", "0", "--limit", "1"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["stored"] == 1
    assert captured.err == "[1] 1911 Encyclopædia Britannica/Abbey\\x1b[2J\\x1b]0;owned\\x07\\r\\x85\n"
    assert stored_titles(tmp_path / "raw") == {evil}  # the record keeps the title as the server gave it


def interrupt_while_waiting(command: list[str], site, tmp_path: Path) -> tuple[int, str, float]:
    """Run ``python -m distill.corpus COMMAND`` against ``site``, send SIGINT once it waits on a
    120 s Retry-After, and return its exit code, its stderr and how long it took to exit."""
    # Ctrl-C's default handling in the child, whatever this process inherited: a test run started in
    # the background by a non-interactive shell ignores SIGINT, and so would the child's Python.
    process = subprocess.Popen([sys.executable, "-m", "distill.corpus", *command], cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while len(site.requests) < (2 if command[0] == "scrape" else 1):  # scrape: the listing, then a revisions request
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        time.sleep(0.3)  # now in the wait
        start = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
        return process.returncode, err, time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.slow  # a subprocess or a full stage chain: in the full suite, not the quick one
def test_ctrl_c_during_a_long_retry_after_wait_exits_at_once_with_one_line(tmp_path):
    told = (503, {"Retry-After": "120"})
    with FaultyWikiSource(revisions=[told] * 10) as site:
        code, err, seconds = interrupt_while_waiting(["scrape", "--out", "raw", "--base-url", site.url, "--delay", "0"], site, tmp_path)
    assert code == 130 and seconds < 2, (code, err, seconds)
    assert len(err.strip().splitlines()) == 1 and err.startswith("interrupted") and "Traceback" not in err
    assert list((tmp_path / "raw").iterdir()) == []
    with FaultyGutenberg(always=told) as site:
        code, err, seconds = interrupt_while_waiting(["fetch-gutenberg", "--out", "pg", "--base-url", site.url, "--delay", "0", "--limit", "1"], site, tmp_path)
    assert code == 130 and seconds < 2, (code, err, seconds)
    assert len(err.strip().splitlines()) == 1 and err.startswith("interrupted") and "Traceback" not in err
