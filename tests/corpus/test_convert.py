"""convert (scraped WikiSource JSON, rendered HTML, 1810 volumes) and combine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.corpus.__main__ import main
from distill.corpus.combine import combine
from distill.corpus.convert import convert, convert_source
from distill.corpus.naming import article_filename
from distill.corpus.records import read_split
from distill.errors import DistillError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
A = "1911 Encyclopædia Britannica/"


def write_raw(folder: Path) -> Path:
    """Raw article JSON as scrape stores it, built from the fixtures without a server."""
    data = json.loads((ASSETS / "wikisource" / "articles.json").read_text(encoding="utf-8"))
    pages = json.loads((ASSETS / "wikisource" / "pages.json").read_text(encoding="utf-8"))
    folder.mkdir(parents=True)
    for title, wikitext in data["articles"].items():
        used = {t: pages[t] for t in pages if t.split("/")[0][5:] in wikitext}
        record = {"title": title, "url": "https://en.wikisource.org/wiki/x", "volume": None, "wikitext": wikitext, "pages": used, "fetched_at": "2025-01-01T00:00:00+00:00"}
        (folder / article_filename(title)).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_convert_scraped_articles_to_title_and_body(tmp_path):
    raw = write_raw(tmp_path / "raw")
    before = snapshot(raw)
    summary = convert(raw, tmp_path / "text", min_words=5)
    assert summary["articles"] == 6 and summary["unknown_templates"] == {}
    assert snapshot(raw) == before
    abbey = (tmp_path / "text" / article_filename(A + "Abbey", ".txt")).read_text(encoding="utf-8")
    title, body = abbey.split("\n", 1)
    assert title == "Abbey" and body.startswith("ABBEY (Lat. abbatia; from Syr. abba, father)")
    assert body.rstrip().endswith("huts of these anchorites.") and "{{" not in body and "<" not in body


def test_all_converts_a_scraped_folder_on_the_way(tmp_path):
    from distill.corpus import build_splits

    raw = write_raw(tmp_path / "raw")
    manifest = build_splits(raw, tmp_path / "splits", train_words=200, val_words=40, test_words=40, seed=0)
    titles = [t for name in ("train", "val", "test") for t in manifest[name]["titles"]]
    assert manifest["corpus"]["articles"] == 6 and set(titles) <= {"Abbess", "Abbeville", "Abbey", "Blank", "Blank Verse", "Blanqui, Louis Auguste"}


def test_rendered_html_gives_the_body_only(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    html = (ASSETS / "wikisource" / "abbess-rendered.html").read_text(encoding="utf-8")
    (raw / "abbess.json").write_text(json.dumps({"title": A + "Abbess", "html": html}), encoding="utf-8")
    [article] = convert_source(raw).articles
    assert article.title == "Abbess"
    assert article.body == (
        "ABBESS (Lat. abbatissa, fem. form of abbas, abbot), the female superior of an abbey or convent of nuns. The mode of election, "
        "position, rights and authority of an abbess correspond generally with those of an abbot (q.v.). The office is elective, the "
        "choice being by the secret votes of the sisters from their own body.\n"
        "By Celtic usage abbesses presided over joint-houses of monks and nuns. At a later period, A.D. 1115, Robert, the founder "
        "of Fontevraud, committed the government of the whole order, men as well as women, to a female superior."
    )


def test_wrong_shape_html_is_one_line_exit_2_naming_the_file(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "good.json").write_text(json.dumps({"title": A + "Abbess", "html": (ASSETS / "wikisource" / "abbess-rendered.html").read_text(encoding="utf-8")}), encoding="utf-8")
    (raw / "odd.json").write_text(json.dumps({"title": A + "Odd", "html": "<html><body><p>Log in</p></body></html>"}), encoding="utf-8")
    code = main(["convert", "--source", str(raw), "--out", str(tmp_path / "text")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(raw / "odd.json") in err and "mw-parser-output" in err
    assert not (tmp_path / "text").exists()  # nothing written, not even the good article


def test_eb1810_entries_are_kept_whole_and_garbage_dropped():
    report = convert_source(ASSETS / "corpus" / "eb1810-sample.json", "eb1810", min_words=20)
    titles = [a.title for a in report.articles]
    assert titles == ["MARPURG", "MESARAIC VESSELS", "DYNASTY", "EARNEST", "ECLECTICS"]
    assert report.dropped == {"front or back matter": 1, "headword is a sentence fragment": 1, "near-empty": 2}
    earnest = report.articles[3].body
    assert "By the civil law, he who recedes" in earnest and "xref" not in earnest and "<" not in earnest
    assert report.articles[1].body == (
        "in the general sense, are the same with MESENTERIC.\n"
        "In common use, mesaraic is more frequently applied to the veins, and mesenteric to the arteries, of the mesentery. See ANATOMY."
    )
    assert "δυναστεία" in report.articles[2].body


def test_convert_rerun_replaces_its_files_and_keeps_others(tmp_path):
    out = tmp_path / "text"
    out.mkdir()
    (out / "README.md").write_text("about this folder", encoding="utf-8")
    (out / "notes-0123456789.txt").write_text("mine", encoding="utf-8")  # named like an article, not convert's
    convert(ASSETS / "corpus" / "eb1810-sample.json", out)
    names = sorted(p.name for p in out.iterdir())
    assert "README.md" in names and "notes-0123456789.txt" in names and ".distill-convert.json" in names and len(names) == 8
    first = snapshot(out)
    convert(ASSETS / "corpus" / "eb1810-sample.json", out)
    assert snapshot(out) == first
    convert(ASSETS / "corpus" / "eb1810-sample.json", out, max_words=60)  # fewer articles: its other files go
    assert len(list(out.glob("*.txt"))) < 6 and (out / "notes-0123456789.txt").read_text(encoding="utf-8") == "mine"


def test_combine_one_record_per_article_inputs_untouched(tmp_path):
    text = tmp_path / "text"
    text.mkdir()
    (text / "a-0000000001.txt").write_text("Alpha\nfirst <s>paragraph</s>\n\nsecond\n", encoding="utf-8")
    (text / "b-0000000002.txt").write_text("Beta\nbody\n", encoding="utf-8")
    (text / "empty-0000000003.txt").write_text("  \n", encoding="utf-8")
    before = snapshot(text)
    assert combine(text, tmp_path / "combined.txt") == {"articles": 2, "words": 6}
    assert snapshot(text) == before
    assert read_split(tmp_path / "combined.txt") == ["Alpha\nfirst paragraph\n\nsecond", "Beta\nbody"]


def test_convert_rejects_a_folder_without_json(tmp_path):
    with pytest.raises(DistillError, match="holds no .json articles or Project Gutenberg slices"):
        convert_source(tmp_path)
