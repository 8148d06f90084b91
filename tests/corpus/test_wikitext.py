"""WikiSource wikitext -> text: templates, markup, sections, page joins (real page wikitext)."""
from __future__ import annotations

import json
from pathlib import Path

from distill.corpus.wikitext import ConvertStats, assemble_article, page_titles, volume_of, wikitext_to_text

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "wikisource"
PAGES = json.loads((ASSETS / "pages.json").read_text(encoding="utf-8"))
ARTICLES = json.loads((ASSETS / "articles.json").read_text(encoding="utf-8"))["articles"]
A = "1911 Encyclopædia Britannica/"


def article(name: str) -> str:
    return wikitext_to_text(assemble_article(ARTICLES[A + name], PAGES))


def test_pages_tag_is_resolved_to_the_pages_it_names():
    assert page_titles(ARTICLES[A + "Abbey"]) == ["Page:EB1911 - Volume 01.djvu/42", "Page:EB1911 - Volume 01.djvu/43"]
    assert volume_of(ARTICLES[A + "Blank Verse"]) == 4 and volume_of("no pages here") is None


def test_one_section_of_a_page_with_its_templates_converted():
    text = article("Abbess")
    assert text == (
        "ABBESS (Lat. abbatissa, fem. form of abbas, abbot), the female superior of an abbey or convent of nuns. "
        "The mode of election, position, rights and authority of an abbess correspond generally with those of an abbot (q.v.)."
    )
    assert article("Abbeville").startswith("ABBEVILLE, a town of northern France") and "28 m. N.W. of Amiens" in article("Abbeville")


def test_an_article_across_two_pages_is_joined_without_headers():
    text = article("Abbey")
    assert text.startswith("ABBEY (Lat. abbatia; from Syr. abba, father), a monastery")
    assert "under the government of an abbot or an abbess." in text  # {{sc|...}}
    assert "Increasing religious fervour, aided by persecution" in text  # the page break, joined
    assert text.endswith("the “cells” or huts of these anchorites.")  # never truncated
    for junk in ("EB1911 Page Heading", "ABBEY||", "pagequality", "{{", "}}", "<section", "Category", "previous", "12"):
        assert junk not in text, junk
    assert text.count("\n") == 1  # two paragraphs, one newline between


def test_named_sections_onlysection_and_running_headers():
    blank = article("Blank")
    assert blank.startswith("BLANK (from the Fr. blanc, white), a word used in various senses")
    assert "BLANE—BLANK VERSE" not in blank and "41" not in blank
    verse = article("Blank Verse")
    assert "Towards the close of the reign of Henry VIII." in verse and verse.endswith("the exact iambic movement:—")
    assert article("Blanqui, Louis Auguste").startswith("BLANQUI, LOUIS AUGUSTE (1805–1881), French publicist")


def test_templates_and_markup():
    stats = ConvertStats()
    wikitext = (
        "'''ABBOT''' ({{sc|Lat.}} ''abbas'') see {{EB1911 lkpl|Monasticism}} and {{EB1911 article link|Benedict|St Benedict}}."
        "<ref>A footnote.</ref> Area&nbsp;5{{EB1911 tfrac|1|2}}, {{EB1911 tfrac|2}} or 5{{frac|3|7}} sq. m.<ref name=x/> "
        "<math>a^2 + b^2</math> {{img float |file=Abbey_02.png |cap={{sc|Fig.}} 1|width=210px}}"
        "{{EB1911 Shoulder HeadingSmall|York.}}the [[Author:Edmund Venables|Venables]] [[File:X.jpg|thumb|a picture]]"
        "\n\n{{block center|<poem>First line,\nsecond line.</poem>}}\n\n{{center|{{sc|Fig. 3.}}—Plan.}}"
        "\n\nSee Volume 3 for more. The text goes on.{{Fs|108%|{{EB1911 footer initials|Edmund Venables|E. V.}}}}{{Unknown thing|x}}"
    )
    text = wikitext_to_text(wikitext, stats)
    assert text.split("\n") == [
        "ABBOT (Lat. abbas) see Monasticism and St Benedict. Area 5½, ½ or 5 3/7 sq. m. a^2 + b^2 the Venables",
        "First line,",
        "second line.",
        "Fig. 3.—Plan.",
        "See Volume 3 for more. The text goes on.",
    ]
    assert stats.unknown_templates == {"unknown thing": 1}


def test_hyphenated_words_and_paragraphs_across_page_breaks():
    pages = {
        "Page:EB1911 - Volume 02.djvu/1": "<noinclude>{{rh|1|X|2}}</noinclude>a word split at the {{hws|con|connexion}}",
        "Page:EB1911 - Volume 02.djvu/2": "<noinclude>{{rh}}</noinclude>{{hwe|nexion|connexion}} of pages, and a well-",
        "Page:EB1911 - Volume 02.djvu/3": "<noinclude></noinclude>known end of a paragraph.{{nop}}<noinclude>{{smallrefs}}</noinclude>",
        "Page:EB1911 - Volume 02.djvu/4": "<noinclude></noinclude>A new paragraph.",
    }
    tag = '<pages index="EB1911 - Volume 02.djvu" from=1 to=4 />'
    assert wikitext_to_text(assemble_article(tag, pages)) == (
        "a word split at the connexion of pages, and a well-known end of a paragraph.\nA new paragraph."
    )


def test_missing_pages_and_sections_are_counted_not_fatal():
    stats = ConvertStats()
    tag = '<pages index="EB1911 - Volume 01.djvu" from=42 to=44 fromsection=nope tosection=s1 />'
    assemble_article(tag, PAGES, stats)
    assert stats.missing_pages == 1 and stats.missing_sections == 1
