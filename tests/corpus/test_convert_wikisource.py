"""convert, WikiSource articles: incomplete articles are marked, the summary counts what was met."""
from __future__ import annotations

import json
from pathlib import Path

from distill.corpus.convert import convert_source, convert_wikisource_article
from distill.corpus.wikitext_stats import ConvertStats

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "wikisource"
PAGES = json.loads((ASSETS / "pages.json").read_text(encoding="utf-8"))
ARTICLES = json.loads((ASSETS / "articles.json").read_text(encoding="utf-8"))["articles"]
A = "1911 Encyclopædia Britannica/"


def record(name: str, wikitext: str | None = None, pages: dict | None = None) -> dict:
    return {"title": A + name, "wikitext": wikitext or ARTICLES[A + name], "pages": PAGES if pages is None else pages}


def test_a_whole_article_is_not_incomplete():
    article = convert_wikisource_article(record("Abbey"), "abbey.json")
    assert article.incomplete is None and article.body.endswith("huts of these anchorites.")


def test_a_missing_page_or_section_marks_the_article_incomplete():
    stats = ConvertStats()
    pages = {title: text for title, text in PAGES.items() if not title.endswith("/43")}
    article = convert_wikisource_article(record("Abbey", pages=pages), "abbey.json", stats)
    assert article.incomplete == "missing page Page:EB1911 - Volume 01.djvu/43"
    assert "anchorites" not in article.body  # the second page's text is lost

    wikitext = ARTICLES[A + "Blank Verse"].replace("tosection='Blank Verse'", "tosection='Blank verse'")
    article = convert_wikisource_article(record("Blank Verse", wikitext), "blank-verse.json", stats)
    assert article.incomplete == "section 'Blank verse' not on Page:EB1911 - Volume 04.djvu/55"
    assert "BLANQUI, LOUIS AUGUSTE" in article.body  # ran on into the next article
    assert stats.missing_pages == 1 and stats.missing_sections == 1


def test_summary_counts_tables_footnotes_and_dropped_scores(tmp_path):
    page = (
        "<noinclude>{{rh|1|ABACUS|2}}</noinclude>'''ABACUS''', a counting frame.<ref>See {{EB1911 lkpl|Arithmetic}}.</ref>\n"
        "{|{{ts|ma}}\n!{{ts|ar}}| Row || Value\n|-\n|{{ts|ac}} rowspan=2| 1 || 10<sup>6</sup>\n|}\n"
        "A tune:<score>\\relative c' { c d e }</score> ends it."
    )
    data = record("Abacus", '<pages index="EB1911 - Volume 01.djvu" from=9 to=9 />', {"Page:EB1911 - Volume 01.djvu/9": page})
    (tmp_path / "abacus.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    report = convert_source(tmp_path, min_words=1)
    [article] = report.articles
    assert article.body.split("\n") == ["ABACUS, a counting frame.", "Row Value", "1 10^6", "A tune: ends it.", "See Arithmetic."]
    summary = report.summary()
    assert summary["tables"] == 1 and summary["footnotes"] == 1 and summary["scores_dropped"] == 1
    assert summary["unknown_templates"] == {} and article.incomplete is None
