"""fetch_gutenberg against a local Project Gutenberg (http.server in a thread) serving small fake
slices as PG does (Latin-1 ``-8.txt`` with CRLF), with a small injected id list."""
from __future__ import annotations

import configparser
import gzip
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from local_server import LocalServer, QuietHandler  # tests/corpus/local_server.py

from distill.corpus import gutenberg_fetch
from distill.corpus.__main__ import main
from distill.corpus.gutenberg_fetch import GutenbergText, body_words, candidate_urls, fetch_gutenberg, load_catalog, parse_volumes
from distill.errors import DistillError

REPO = Path(__file__).resolve().parent.parent.parent
FAST = {"delay": 0.0, "backoff": 0.0, "timeout": 5.0}


def pg_text(ebook_id: int, headword: str, body: str) -> str:
    lines = [
        f"The Project Gutenberg EBook of Encyclopaedia Britannica, 11th Edition, ebook {ebook_id}",
        "",
        f"*** START OF THIS PROJECT GUTENBERG EBOOK {ebook_id} ***",
        "",
        f"{headword}, {body}",
        "  (J. A. F.)",
        "",
        f"*** END OF THIS PROJECT GUTENBERG EBOOK {ebook_id} ***",
    ]
    return "\r\n".join(lines) + "\r\n"


TEXTS = {
    1001: pg_text(1001, "CAFÉ", "a coffee-house; the word, like née and façade, came from French."),
    1002: pg_text(1002, "CAÑON", "a deep gorge; see also Ægina and Zürich (_q.v._)."),
    1003: pg_text(1003, "CÆSAR", "the name of a patrician family of Rome, § 2."),
    1004: pg_text(1004, "AUTHOR LIST", "Ångström, A. J.; Müller, F. M."),
}


def entry(file: str, volume: int, ebook_id: int, kind: str = "articles", slice_: str = "1") -> GutenbergText:
    text = TEXTS[ebook_id]
    return GutenbergText(file, volume, slice_, ebook_id, kind, f"Fake slice {ebook_id}", body_words(text), hashlib.sha256(text.encode("utf-8")).hexdigest())


CATALOG = [
    entry("volume-02-slice-01.txt.gz", 2, 1001),
    entry("volume-02-slice-02.txt.gz", 2, 1002, slice_="2"),
    entry("volume-03-slice-01.txt.gz", 3, 1003),
    entry("volume-03-appendix-author-list.txt.gz", 3, 1004, kind="appendix", slice_="appendix"),
]


class FakeGutenberg(LocalServer):
    """Serves ``files`` (URL path -> bytes) and counts every request.

    ``script``: URL path -> answers to give before the real file, each ``(status, headers)`` or
    ``"short"`` (a Content-Length 100 bytes longer than the body sent, then the connection closes).
    """

    def __init__(self, files: dict[str, bytes], script: dict[str, list] | None = None) -> None:
        self.files = dict(files)
        self.script = {path: list(answers) for path, answers in (script or {}).items()}
        self.requests: list[str] = []
        self.times: list[float] = []
        self.user_agents: set[str] = set()
        self.lock = threading.Lock()
        self._serve()

    @classmethod
    def latin1(cls, ids=TEXTS, **kwargs) -> "FakeGutenberg":
        return cls({f"/files/{i}/{i}-8.txt": TEXTS[i].encode("latin-1") for i in ids}, **kwargs)

    def count(self, path: str) -> int:
        return self.requests.count(path)

    def _handler(self):
        fake = self

        class Handler(QuietHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                with fake.lock:
                    fake.requests.append(self.path)
                    fake.times.append(time.monotonic())
                    fake.user_agents.add(self.headers.get("User-Agent", ""))
                    answers = fake.script.get(self.path)
                    answer = answers.pop(0) if answers else None
                body = fake.files.get(self.path)
                if answer == "short":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body) + 100))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    return
                if answer is not None:
                    status, headers = answer
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", "4")
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8" if self.path.endswith(("-0.txt", "pg.txt")) else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)


        return Handler



def stored_text(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode("utf-8")


def manifest(folder: Path) -> dict[str, dict]:
    lines = (folder / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return {row["file"]: row for row in (dict(zip(header, line.split("\t"))) for line in lines[1:])}


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted write would leave behind."""
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_downloads_latin1_as_gzipped_utf8_with_checksums_and_a_rerun_skips_verified_files(tmp_path):
    out = tmp_path / "eb1911"
    with FakeGutenberg.latin1() as site:
        summary = fetch_gutenberg(out, base_url=site.url, contact="me@example.org", catalog=CATALOG, **FAST)
        assert summary["fetched"] == 4 and summary["already"] == 0 and summary["checksum_mismatch"] == []
        assert summary["requests"] == 4 and site.requests == [f"/files/{i}/{i}-8.txt" for i in TEXTS]
        agent = site.user_agents.pop()
        assert agent.startswith("distill-corpus/") and "(me@example.org; " in agent

        text = stored_text(out / "volume-02-slice-01.txt.gz")
        assert text == TEXTS[1001] and "CAFÉ" in text and "née" in text and "\r\n" in text
        rows = manifest(out)
        assert list(rows) == [e.file for e in CATALOG]
        row = rows["volume-03-appendix-author-list.txt.gz"]
        assert row["kind"] == "appendix" and row["pg_ebook_id"] == "1004" and row["checksum"] == "ok"
        assert row["source"] == f"{site.url}/files/1004/1004-8.txt" and row["sha256"] == CATALOG[3].sha256
        assert rows["volume-02-slice-01.txt.gz"]["words"] == "15"  # 12 on the headword line, 3 in "(J. A. F.)"
        assert summary["words"] == sum(e.words for e in CATALOG)

        again = fetch_gutenberg(out, base_url=site.url, catalog=CATALOG, **FAST)
        assert again["already"] == 4 and again["fetched"] == 0 and again["requests"] == 0 and len(site.requests) == 4

        (out / "volume-02-slice-02.txt.gz").write_bytes((out / "volume-02-slice-02.txt.gz").read_bytes()[:40])  # cut short
        (out / "volume-03-slice-01.txt.gz").unlink()
        third = fetch_gutenberg(out, base_url=site.url, catalog=CATALOG, **FAST)
        assert third["already"] == 2 and third["fetched"] == 2 and third["replaced"] == 1
        assert site.requests[4:] == ["/files/1002/1002-8.txt", "/files/1003/1003-8.txt"]
    assert stored_text(out / "volume-02-slice-02.txt.gz") == TEXTS[1002] and leftovers(out) == []


def test_a_text_that_differs_from_the_list_is_kept_reported_and_not_fetched_again(tmp_path):
    changed = TEXTS[1001].replace("EBook of", "eBook of")  # PG regenerated the header
    with FakeGutenberg({"/files/1001/1001-8.txt": changed.encode("latin-1")}) as site:
        summary = fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG[:1], **FAST)
        assert summary["fetched"] == 1 and summary["checksum_mismatch"] == ["volume-02-slice-01.txt.gz"]
        row = manifest(tmp_path)["volume-02-slice-01.txt.gz"]
        assert row["checksum"] == "mismatch" and row["sha256"] == hashlib.sha256(changed.encode("utf-8")).hexdigest()
        assert stored_text(tmp_path / "volume-02-slice-01.txt.gz") == changed
        again = fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG[:1], **FAST)
        assert again["already"] == 1 and again["requests"] == 0 and again["checksum_mismatch"] == ["volume-02-slice-01.txt.gz"]


def test_503_with_retry_after_and_a_500_are_retried_waiting_as_told(tmp_path):
    path = "/files/1001/1001-8.txt"
    with FakeGutenberg.latin1(script={path: [(503, {"Retry-After": "1"}), (500, {})]}) as site:
        summary = fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG[:1], delay=0.0, backoff=0.1, timeout=5.0)
        assert site.count(path) == 3 and summary["requests"] == 3
        told, backoff = (b - a for a, b in zip(site.times, site.times[1:]))
    assert 1.0 <= told < 1.5 and 0.2 <= backoff < 0.7  # Retry-After, then backoff 0.1 * 2**1
    assert stored_text(tmp_path / "volume-02-slice-01.txt.gz") == TEXTS[1001]


def test_a_body_cut_short_is_retried(tmp_path):
    path = "/files/1002/1002-8.txt"
    with FakeGutenberg.latin1(script={path: ["short"]}) as site:
        summary = fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG[1:2], **FAST)
        assert site.count(path) == 2 and summary["fetched"] == 1 and summary["checksum_mismatch"] == []
    assert stored_text(tmp_path / "volume-02-slice-02.txt.gz") == TEXTS[1002]


def test_retries_run_out_with_a_one_line_error_naming_the_url(tmp_path):
    path = "/files/1001/1001-8.txt"
    with FakeGutenberg.latin1(script={path: [(503, {"Retry-After": "0"})] * 3}) as site:
        with pytest.raises(DistillError, match=r"1001-8\.txt: HTTP 503 after 3 tries; check --base-url"):
            fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG[:1], retries=2, **FAST)
    assert not (tmp_path / "volume-02-slice-01.txt.gz").exists() and leftovers(tmp_path) == []


def test_a_404_on_the_latin1_file_falls_back_to_the_utf8_ones(tmp_path):
    files = {
        "/files/1001/1001-0.txt": ("\ufeff" + TEXTS[1001]).encode("utf-8"),  # PG's UTF-8 files start with a BOM
        "/cache/epub/1002/pg1002.txt": TEXTS[1002].encode("utf-8"),
    }
    with FakeGutenberg(files) as site:
        summary = fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG[:2], **FAST)
        assert site.requests == ["/files/1001/1001-8.txt", "/files/1001/1001-0.txt", "/files/1002/1002-8.txt", "/files/1002/1002-0.txt", "/cache/epub/1002/pg1002.txt"]
    assert summary["fetched"] == 2 and summary["checksum_mismatch"] == []
    assert stored_text(tmp_path / "volume-02-slice-01.txt.gz") == TEXTS[1001]
    assert manifest(tmp_path)["volume-02-slice-02.txt.gz"]["source"].endswith("/cache/epub/1002/pg1002.txt")


def test_an_ebook_missing_everywhere_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gutenberg_fetch, "load_catalog", lambda path=None: CATALOG)
    with FakeGutenberg({}) as site:
        code = main(["fetch-gutenberg", "--out", str(tmp_path / "out"), "--base-url", site.url, "--delay", "0", "--limit", "1"])
        assert len(site.requests) == len(candidate_urls(site.url, 1001))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ebook 1001 (volume-02-slice-01.txt.gz): not found (404)") and "--from-dir" in err


def test_an_html_page_instead_of_the_text_is_refused(tmp_path):
    page = b"<!DOCTYPE html><html><body>Access to Project Gutenberg has been blocked</body></html>"
    with FakeGutenberg({"/files/1001/1001-8.txt": page}) as site:
        with pytest.raises(DistillError, match=r"1001-8\.txt: the answer is an HTML page.*--from-dir"):
            fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG[:1], **FAST)
    assert list(tmp_path.glob("*.gz")) == []


def test_a_delay_separates_request_starts(tmp_path):
    with FakeGutenberg.latin1() as site:
        fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG[:3], delay=0.15, backoff=0.0, timeout=5.0)
        gaps = [b - a for a, b in zip(site.times, site.times[1:])]
    assert len(gaps) == 2 and min(gaps) >= 0.14


def test_ctrl_c_leaves_only_whole_files_and_the_rerun_resumes(tmp_path):
    def interrupt_after_two(index, total, item, status):
        if index == 2:
            raise KeyboardInterrupt

    with FakeGutenberg.latin1() as site:
        with pytest.raises(KeyboardInterrupt):
            fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG, progress=interrupt_after_two, **FAST)
        assert sorted(p.name for p in tmp_path.glob("*.gz")) == sorted(e.file for e in CATALOG[:2]) and leftovers(tmp_path) == []
        assert set(manifest(tmp_path)) == {e.file for e in CATALOG[:2]}
        summary = fetch_gutenberg(tmp_path, base_url=site.url, catalog=CATALOG, **FAST)
        assert summary["already"] == 2 and summary["fetched"] == 2 and len(site.requests) == 4


def _local_copy(folder: Path) -> Path:
    """A folder laid out like the shared one: slices at the top level, extras in extra/."""
    (folder / "extra").mkdir(parents=True)
    for item in CATALOG:
        where = folder / "extra" if item.kind == "appendix" else folder
        (where / item.file).write_bytes(gzip.compress(TEXTS[item.pg_ebook_id].encode("utf-8")))
    return folder


def test_from_dir_copies_and_verifies_and_refuses_a_corrupted_file(tmp_path):
    source = _local_copy(tmp_path / "shared")
    out = tmp_path / "out"
    summary = fetch_gutenberg(out, from_dir=source, catalog=CATALOG)
    assert summary["copied"] == 4 and summary["requests"] == 0 and summary["source"] == str(source)
    appendix = out / "volume-03-appendix-author-list.txt.gz"
    assert not appendix.is_symlink() and appendix.read_bytes() == (source / "extra" / appendix.name).read_bytes()
    assert manifest(out)[appendix.name]["source"] == str(source / "extra" / appendix.name)
    assert fetch_gutenberg(out, from_dir=source, catalog=CATALOG)["already"] == 4

    bad = source / "volume-02-slice-02.txt.gz"
    bad.write_bytes(gzip.compress(TEXTS[1002].replace("gorge", "gorgé").encode("utf-8")))
    (source / "volume-03-slice-01.txt.gz").write_bytes(b"not gzip at all")
    fresh = tmp_path / "fresh"
    with pytest.raises(DistillError) as err:
        fetch_gutenberg(fresh, from_dir=source, catalog=CATALOG)
    message = str(err.value)
    assert "2 of 4 files refused" in message and "volume-02-slice-02.txt.gz" in message and "sha256" in message
    assert "volume-03-slice-01.txt.gz" in message and "not a whole gzip file" in message and "re-copy" in message
    assert sorted(p.name for p in fresh.glob("*.gz")) == ["volume-02-slice-01.txt.gz", "volume-03-appendix-author-list.txt.gz"]
    assert set(manifest(fresh)) == {"volume-02-slice-01.txt.gz", "volume-03-appendix-author-list.txt.gz"} and leftovers(fresh) == []


def test_from_dir_does_not_accept_a_stored_download_that_differs(tmp_path):
    """An earlier download with a regenerated header stays only without --from-dir."""
    out = tmp_path / "out"
    changed = TEXTS[1001].replace("EBook of", "eBook of")
    with FakeGutenberg({"/files/1001/1001-8.txt": changed.encode("latin-1")}) as site:
        fetch_gutenberg(out, base_url=site.url, catalog=CATALOG[:1], **FAST)
    summary = fetch_gutenberg(out, from_dir=_local_copy(tmp_path / "shared"), catalog=CATALOG[:1])
    assert summary["copied"] == 1 and summary["replaced"] == 1 and summary["checksum_mismatch"] == []
    assert stored_text(out / "volume-02-slice-01.txt.gz") == TEXTS[1001] and manifest(out)["volume-02-slice-01.txt.gz"]["checksum"] == "ok"


def test_cli_end_to_end_with_volumes_limit_and_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gutenberg_fetch, "load_catalog", lambda path=None: CATALOG)
    out = tmp_path / "eb1911"
    with FakeGutenberg.latin1() as site:
        args = ["fetch-gutenberg", "--out", str(out), "--base-url", site.url, "--contact", "me@example.org", "--delay", "0", "--backoff", "0", "--retries", "1", "--timeout", "5"]
        assert main([*args, "--volumes", "3", "--limit", "1"]) == 0
        captured = capsys.readouterr()
        summary = json.loads(captured.out)
        assert summary["selected"] == 1 and summary["fetched"] == 1 and summary["out"] == str(out)
        assert captured.err.splitlines() == ["[1/1] volume-03-slice-01.txt.gz fetched"]

        assert main([*args, "--volumes", "2-3"]) == 0
        captured = capsys.readouterr()
        summary = json.loads(captured.out)
        assert summary["selected"] == 4 and summary["already"] == 1 and summary["fetched"] == 3 and summary["requests"] == 3
        assert "[2/4] volume-02-slice-02.txt.gz fetched" in captured.err.splitlines()
        assert len(site.requests) == 4
    assert sorted(p.name for p in out.glob("*.gz")) == sorted(e.file for e in CATALOG)

    from_dir = _local_copy(tmp_path / "shared")
    assert main(["fetch-gutenberg", "--out", str(tmp_path / "copy"), "--from-dir", str(from_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["copied"] == 4

    code = main(["fetch-gutenberg", "--out", str(tmp_path / "none"), "--volumes", "17", "--from-dir", str(from_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: --volumes: no texts of volumes [17]; the list has volumes 2-3"
    code = main(["fetch-gutenberg", "--out", str(tmp_path / "none"), "--volumes", "30", "--from-dir", str(from_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: --volumes: '30' is outside the 1911 edition's volumes 1-29; write e.g. 2,3 or 2-5"


def test_volume_specs():
    assert parse_volumes("2,3") == {2, 3} and parse_volumes("2-5") == {2, 3, 4, 5} and parse_volumes("2, 4-6") == {2, 4, 5, 6}
    for bad in ["two", "5-2", "2-", "", "0", "30", "2-99999999999999999999"]:  # a huge range is refused, not expanded
        with pytest.raises(DistillError, match="--volumes"):
            parse_volumes(bad)


def test_a_base_url_without_scheme_is_refused_before_any_request(tmp_path):
    for url in ["localhost:8000", "www.gutenberg.org", "ftp://mirror.example.org", ""]:
        with pytest.raises(DistillError, match=r"^--base-url: .* is not an http\(s\) address"):
            fetch_gutenberg(tmp_path / "out", base_url=url, catalog=CATALOG[:1], **FAST)
    assert not (tmp_path / "out").exists()


def test_a_manifest_the_command_did_not_write_is_refused_and_kept(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "MANIFEST.tsv").write_bytes(b"my\tdata\n\xff")
    with FakeGutenberg.latin1() as site:
        with pytest.raises(DistillError, match="MANIFEST.tsv: exists and is not a fetch-gutenberg manifest"):
            fetch_gutenberg(out, base_url=site.url, catalog=CATALOG[:1], **FAST)
        assert site.requests == []
    assert (out / "MANIFEST.tsv").read_bytes() == b"my\tdata\n\xff" and sorted(p.name for p in out.iterdir()) == ["MANIFEST.tsv"]


def test_the_shipped_id_list_is_whole_and_packaged():
    catalog = load_catalog()
    assert len(catalog) == 130 and len({e.file for e in catalog}) == 130 and len({e.pg_ebook_id for e in catalog}) == 130
    assert {e.volume for e in catalog} == set(range(2, 18))
    assert [e.file for e in catalog if e.kind == "appendix"] == ["volume-04-appendix-author-list.txt.gz", "volume-05-appendix-author-list.txt.gz"]
    assert {e.kind for e in catalog} == {"articles", "appendix"} and {"volume-04-part-03.txt.gz", "volume-04-part-04.txt.gz"} <= {e.file for e in catalog}
    assert all(len(e.sha256) == 64 and int(e.sha256, 16) >= 0 and e.words > 0 for e in catalog)
    assert sum(e.words for e in catalog) > 22_000_000
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert "corpus/*.tsv" in config["options.package_data"]["distill"]
