"""scrape against a local WikiSource (see conftest.py): what it stores, retries, resumes."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from fake_wikisource import FakeWikiSource  # tests/corpus/fake_wikisource.py

from distill import __version__
from distill.corpus.__main__ import main
from distill.corpus.mediawiki import MediaWikiClient
from distill.corpus.polite_get import user_agent
from distill.corpus.scrape import is_article_title, scrape
from distill.errors import DistillError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "wikisource"
ARTICLE_TITLES = list(json.loads((ASSETS / "articles.json").read_text(encoding="utf-8"))["articles"])
FAST = {"delay": 0.0, "backoff": 0.01, "timeout": 5.0}


def stored_titles(folder: Path) -> set[str]:
    return {json.loads(p.read_text(encoding="utf-8"))["title"] for p in folder.glob("*.json")}


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted write would leave behind."""
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_scrape_stores_exactly_the_articles_retries_503_and_resumes(tmp_path):
    out = tmp_path / "raw"
    with FakeWikiSource(fail_once=["1911 Encyclopædia Britannica/Abbey"]) as site:
        result = scrape(out, base_url=site.url, concurrency=2, batch_size=2, contact="scraper@example.org", **FAST)
        assert stored_titles(out) == set(ARTICLE_TITLES)
        assert result.stored == 6 and result.non_article == 7 and result.missing == 0
        counts = site.revision_requests()
        assert counts["1911 Encyclopædia Britannica/Abbey"] == 2  # the 503, then the retry
        assert not [t for t in counts if not t.startswith(("Page:", "1911 Encyclopædia Britannica/"))]
        assert "1911 Encyclopædia Britannica/Volume 4" not in counts and "1911 Encyclopædia Britannica/Abbey/Plan of St Gall" not in counts
        assert all(count == 1 for title, count in counts.items() if title.startswith("Page:"))  # each page fetched once
        agent = site.user_agents.pop()
        assert agent.startswith("distill-corpus/") and "(scraper@example.org; " in agent

        record = json.loads(next(out.glob("abbey-*.json")).read_text(encoding="utf-8"))
        assert record["title"] == "1911 Encyclopædia Britannica/Abbey" and record["volume"] == 1
        assert record["url"] == f"{site.url}/wiki/1911_Encyclop%C3%A6dia_Britannica/Abbey"
        assert set(record["pages"]) == {"Page:EB1911 - Volume 01.djvu/42", "Page:EB1911 - Volume 01.djvu/43"}
        assert "<pages index" in record["wikitext"] and record["fetched_at"].endswith("+00:00")

        before = len(site.requests)
        again = scrape(out, base_url=site.url, **FAST)
        new = site.requests[before:]
        assert again.stored == 0 and again.already == 6
        assert all(params.get("list") == "allpages" for params in new)  # only the listing, no article fetched
    assert leftovers(out) == []


def test_a_scrape_that_dies_midway_resumes_with_nothing_lost_or_fetched_twice(tmp_path):
    out = tmp_path / "raw"
    with FakeWikiSource(die_after=5) as site:  # listing, 2 articles + their page, then only 500s
        with pytest.raises(DistillError, match=r"HTTP 500 after 2 tries"):
            scrape(out, base_url=site.url, concurrency=1, batch_size=1, retries=1, **FAST)
    first = stored_titles(out)
    assert 0 < len(first) < 6 and leftovers(out) == []
    with FakeWikiSource() as site:
        scrape(out, base_url=site.url, concurrency=1, batch_size=1, **FAST)
        refetched = set(site.revision_requests()) & first
    assert refetched == set()
    assert stored_titles(out) == set(ARTICLE_TITLES)


def test_a_scrape_interrupted_by_ctrl_c_keeps_whole_files_and_resumes(tmp_path):
    out = tmp_path / "raw"
    seen = []

    def interrupt_after_two(title, path):
        seen.append(title)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with FakeWikiSource() as site:
        with pytest.raises(KeyboardInterrupt):
            scrape(out, base_url=site.url, concurrency=2, batch_size=1, progress=interrupt_after_two, **FAST)
        first = stored_titles(out)
        assert first == set(seen) and leftovers(out) == []
        for path in out.glob("*.json"):
            json.loads(path.read_text(encoding="utf-8"))  # every stored file is whole
        before = len(site.requests)
        result = scrape(out, base_url=site.url, batch_size=1, **FAST)
        titles_again = {t for params in site.requests[before:] if params.get("prop") == "revisions" for t in params["titles"].split("|")}
    assert result.stored == 4 and not titles_again & first
    assert stored_titles(out) == set(ARTICLE_TITLES)


def test_limit_and_volume(tmp_path):
    with FakeWikiSource() as site:
        scrape(tmp_path / "two", base_url=site.url, limit=2, **FAST)
        scrape(tmp_path / "vol4", base_url=site.url, volume=4, **FAST)
    assert stored_titles(tmp_path / "two") == set(ARTICLE_TITLES[:2])
    assert stored_titles(tmp_path / "vol4") == set(ARTICLE_TITLES[3:])


def test_only_1911_britannica_articles_are_followed():
    assert is_article_title("1911 Encyclopædia Britannica/Abbey")
    assert is_article_title("1911 Encyclopædia Britannica/Blanqui, Louis Auguste")
    for title in ["Author:Edmund William Gosse", "Portal:Encyclopædia Britannica", "File:Abbey 02.png", "Category:EB1911",
                  "1911 Encyclopædia Britannica/Volume 4", "1911 Encyclopædia Britannica/Abbey/Plan", "1911 Encyclopædia Britannica/",
                  "1911 Encyclopædia Britannica/Index", "The New Student's Reference Work/Abbey", "Page:EB1911 - Volume 01.djvu/42"]:
        assert not is_article_title(title), title


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_one_line_exit_2(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}"
    code = main(["scrape", "--out", str(tmp_path / "raw"), "--base-url", url, "--retries", "1", "--backoff", "0.01", "--delay", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and url in err and "cannot reach the server" in err
    assert list((tmp_path / "raw").glob("*")) == []


def test_a_server_that_is_not_mediawiki_is_one_line_exit_2(tmp_path, capsys):
    with FakeWikiSource(html=True) as site:
        code = main(["scrape", "--out", str(tmp_path / "raw"), "--base-url", site.url, "--delay", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{site.url}/w/api.php" in err and "not MediaWiki API JSON" in err
    assert list((tmp_path / "raw").glob("*")) == []


def test_wikimedia_hosts_need_a_contact_and_nothing_is_written_without_one(tmp_path, capsys):
    code = main(["scrape", "--out", str(tmp_path / "raw")])  # the default base URL: en.wikisource.org
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: --contact: required for en.wikisource.org") and "--contact you@example.org" in err
    assert not (tmp_path / "raw").exists()
    assert "(me@example.org; " in MediaWikiClient("https://en.wikisource.org", contact="me@example.org").user_agent
    assert user_agent().startswith(f"distill-corpus/{__version__} (1911 Britannica")  # other hosts: no invented contact
