"""WikiSource wikitext -> text: templates, markup, sections, page joins (real page wikitext)."""
from __future__ import annotations

import json
from pathlib import Path

from distill.corpus.wikitext import wikitext_to_text
from distill.corpus.wikitext_pages import assemble_article, page_titles, volume_of
from distill.corpus.wikitext_stats import ConvertStats

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
        "\n\nSee Volume 3 for more. The text goes on.{{Fs|108%|{{EB1911 footer initials|Edmund Venables|E. V.}}}} {{Unknown thing|x}}"
    )
    text = wikitext_to_text(wikitext, stats)
    assert text.split("\n") == [
        "ABBOT (Lat. abbas) see Monasticism and Benedict. Area 5½, ½ or 5 3/7 sq. m. a^2 + b^2 the Venables",
        "First line,",
        "second line.",
        "Fig. 3.—Plan.",
        "See Volume 3 for more. The text goes on. x",  # an unknown template keeps its words
        "A footnote.",  # footnotes close the article; <ref name=x/> defines none
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


# Real WikiSource syntax below: the tables, footnotes, formulae and links are copied from EB1911
# Page: wikitext (Volume 1 pages 45-48 and 746, Volume 4 page 54); the other templates are
# written as WikiSource pages use them.

CLUNY_TABLE = (  # Vol. 1 p. 46, trimmed to three rows
    "had been rebuilt.\n"
    "{|{{ts|sm92|lh10|ma|width:400px}}\n"
    "|colspan=6|[[File:EB1911 - Volume 01 pg. 46 img 2.png|380px|center]]\n"
    "|-\n"
    "|colspan=6|{{center|{{sc|Fig. 5.}}—Abbey of Cluny, from Viollet-le-Duc.}}\n"
    "|-\n"
    "|A.||Gateway.||F.||Tomb of St Hugh.||M.||Bakehouse.\n"
    "|-\n"
    "|E.||Retro-altar. ||L.||Guest-house.\n"
    "|}\n"
    "The church, the ground-plan of which"
)
ALLOXANTIN_TABLE = (  # Vol. 1 p. 746: a structural formula drawn as a table
    '{| align=center style="line-height:90%;"\n'
    "|colspan=2|NH—CO || || colspan=2 |CO—NH\n"
    "|-\n"
    "|&nbsp;&#124;||&emsp;&#124;|| ||&nbsp;&#124;||{{em|1.1}}&#124;\n"
    "|-\n"
    "|CO ||{{em|.8}}C(OH)||—O—||CH||&emsp;CO\n"
    "|}"
)
POPULATION_TABLE = (  # cells styled with {{ts}} and attributes, as census tables are
    "{|{{ts|ma|sm92}}\n"
    "|+ Population of the county\n"
    "!{{ts|ar}}| Year\n"
    "!{{ts|ac|bb}} colspan=2| Inhabitants\n"
    "|-\n"
    "|{{ts|ac|bb}} rowspan=2| 1850\n"
    '| style="text-align:right" | 2,343 || align=right | 1,020\n'
    "|-\n"
    "!{{ts|ar}}| Total\n"
    "|{{ts|ar}}|3,363\n"
    "|}"
)


def test_tables_become_rows_of_cell_text_without_attributes():
    stats = ConvertStats()
    text = wikitext_to_text(CLUNY_TABLE + "\n\n" + ALLOXANTIN_TABLE + "\n\n" + POPULATION_TABLE, stats)
    assert text.split("\n") == [
        "had been rebuilt.",
        "Fig. 5.—Abbey of Cluny, from Viollet-le-Duc.",
        "A. Gateway. F. Tomb of St Hugh. M. Bakehouse.",
        "E. Retro-altar. L. Guest-house.",
        "The church, the ground-plan of which",
        "NH—CO CO—NH",
        "CO C(OH) —O— CH CO",
        "Population of the county",
        "Year Inhabitants",
        "1850 2,343 1,020",
        "Total 3,363",
    ]
    for junk in ("|", "rowspan", "colspan", "style=", "align=", "width", "{{", "File"):
        assert junk not in text, junk
    assert stats.tables == 3


def test_nested_table_and_poem_cells_keep_every_line():
    # Vol. 1 p. 47: the key to a plan, three <poem> columns in a table inside a table cell.
    wikitext = (
        "{| {{ts|sm92|lh11|ma|width:400px}}\n|{{center|{{sc|Fig. 6.}}—Clairvaux.}}\n"
        "{|{{Ts|width:490px|sm92|lh11|ma}}\n|{{Ts|width:33%|vtp}}|\n<poem>A.&emsp;Cloisters.\n"
        "B.&emsp;Ovens, and corn<br>{{em|2.5}}and oil-mills.</poem>\n|&emsp;\n|width=34%|\n<poem>H.&emsp;Stables.</poem>\n|}\n|}"
    )
    stats = ConvertStats()
    assert wikitext_to_text(wikitext, stats).split("\n") == [
        "Fig. 6.—Clairvaux.", "A. Cloisters.", "B. Ovens, and corn", "and oil-mills. H. Stables.",
    ]
    assert stats.tables == 2


def test_numbered_equations_are_lines_of_their_own():
    wikitext = (
        "The mean kinetic energy is{{ne||<math>\\tfrac12\\overline{mu^2}</math>|(7)}}where ''m'' is the mass, and"
        "{{ne|we have|<math>pv = RT</math>|(8)}}{{ne||<math>x</math>}}"
    )
    assert wikitext_to_text(wikitext).split("\n") == [
        "The mean kinetic energy is",
        "\\tfrac12\\overline{mu^2} (7)",
        "where m is the mass, and",
        "we have pv = RT (8)",
        "x",
    ]


def test_link_templates_show_the_printed_word():
    wikitext = (
        "(See Articles {{EB1911 article link|Metallography}}, {{EB1911 article link|Gun-making|Gun}}.) "
        "“{{1911link|blank verse|Blank Verse|nosc=1}}” (''q.v.''), {{EB1911 lkpl|Mesoxalic Acid|mesoxalic acid}}, "
        "{{EB1911 lkpl|caffeine}}, {{EB1911 lkpl|Grebe|grebes|}}, {{11link|Oystercatcher|Oyster-catcher}}, "
        "{{11link|Dietary}} and {{EB9 article link|Atom}}."
    )
    assert wikitext_to_text(wikitext) == (
        "(See Articles Metallography, Gun-making.) “blank verse” (q.v.), mesoxalic acid, caffeine, grebes, "
        "Oyster-catcher, Dietary and Atom."
    )


def test_size_first_templates_keep_their_text():
    wikitext = (
        "{{hi|1em|Ælfric, abbot.}} {{hanging indent|2em|Gervase, abbot.}} {{hi|Only text.}} {{outdent|Out.}} "
        "{{dent|2em|-1em|Dented.}} {{Fs|108%|Sized.}} {{size|xl|CAPE COLONY}}{{hi|2em}}"
    )
    assert wikitext_to_text(wikitext) == "Ælfric, abbot. Gervase, abbot. Only text. Out. Dented. Sized. CAPE COLONY"


def test_unknown_and_unit_templates_keep_their_words():
    stats = ConvertStats()
    wikitext = (
        "a charge weighing {{lb-|330}} each, {{lb-}} in all; {{dual line|Cape|Colony}} {{...}} see {{EB9 article link|Atom}}; "
        "lat. {{11co|51|30|N}}; {{Some new template|width:3em|12px|kept words|Left: the king|text=more words|https://example.org/x|Fig 3.png}}"
    )
    assert wikitext_to_text(wikitext, stats) == (
        "a charge weighing 330 lb. each, lb. in all; Cape Colony ... see Atom; lat. 51° 30′ N; kept words Left: the king more words"
    )
    assert stats.unknown_templates == {"some new template": 1}


def test_superscripts_and_subscripts_keep_their_meaning():
    wikitext = (  # the formulae are Vol. 1 p. 746
        "'''ALLOXAN''', C<sub>4</sub>H<sub>2</sub>N<sub>2</sub>O<sub>4</sub> + CO(NH<sub>2</sub>)<sub>2</sub>; "
        "P<sub>1</sub>. Scriptorium; 10<sup>6</sup> and 10<sup>12</sup> ft.; x{{sup|2}} + H{{sub|2}}O; "
        "x<sup>&minus;1</sup>; e<sup>''x''</sup>"
    )
    assert wikitext_to_text(wikitext) == (
        "ALLOXAN, C_{4}H_{2}N_{2}O_{4} + CO(NH_{2})_{2}; P_{1}. Scriptorium; 10^6 and 10^{12} ft.; x^2 + H_{2}O; x^{−1}; e^x"
    )


def test_score_is_dropped_and_counted():
    stats = ConvertStats()
    wikitext = "The air runs thus:<score>\\relative c' { \\time 3/4 c4 d e | f2. }</score> and ends."
    assert wikitext_to_text(wikitext, stats) == "The air runs thus: and ends."
    assert stats.scores == 1


def test_footnotes_close_the_article_in_order_once_each():
    wikitext = (
        "As elucidated by Professor Willis,<ref>''The Architectural History of the Conventual Buildings of the Monastery "
        "of Christ Church in Canterbury''. By the Rev. [[Author:Robert Willis (1800-1875)|Robert Willis]]. Printed for the "
        "Kent Archaeological Society, 1869.</ref> it exhibits the plan.<ref name=a>A named note.</ref> Again<ref name=a/> "
        "and again.<ref name=\"a\">A named note.</ref>\n\nmay fairly be termed alloys.<ref name=p748>\nThe instructive case "
        "of the solidification of a solution of common\nsalt in water is discussed</ref>\nIf a mixture"
        "<ref follow=p748>in the article {{EB1911 article link|Fusion}}.</ref> of A and B be melted"
    )
    stats = ConvertStats()
    assert wikitext_to_text(wikitext, stats).split("\n") == [
        "As elucidated by Professor Willis, it exhibits the plan. Again and again.",
        "may fairly be termed alloys. If a mixture of A and B be melted",
        "The Architectural History of the Conventual Buildings of the Monastery of Christ Church in Canterbury. "
        "By the Rev. Robert Willis. Printed for the Kent Archaeological Society, 1869.",
        "A named note.",
        "The instructive case of the solidification of a solution of common salt in water is discussed in the article Fusion.",
    ]
    assert stats.footnotes == 3


PAGES_2 = {
    "Page:EB1911 - Volume 02.djvu/1": '<noinclude>{{rh}}</noinclude><section begin="s1"/>The end of ABACUS.<section end="s1"/>\n'
    '<section begin="s2"/>ABADDON, the angel',
    "Page:EB1911 - Volume 02.djvu/3": '<noinclude></noinclude>of the abyss.<section end="s2"/>\n<section begin="s3"/>ABAE, an ancient town.',
}


def test_a_missing_page_or_section_is_named_as_a_problem():
    problems: list[str] = []
    tag = '<pages index="EB1911 - Volume 02.djvu" from=1 to=3 fromsection=s2 tosection=s2 />'
    assert wikitext_to_text(assemble_article(tag, PAGES_2, ConvertStats(), problems)) == "ABADDON, the angel of the abyss."
    assert problems == ["missing page Page:EB1911 - Volume 02.djvu/2"]  # the text of page 2 is lost

    problems, stats = [], ConvertStats()
    tag = '<pages index="EB1911 - Volume 02.djvu" from=1 to=1 fromsection=S2 tosection=s2 /><pages index="EB1911 - Volume 02.djvu" from=3 to=3 tosection=s9 />'
    text = wikitext_to_text(assemble_article(tag, PAGES_2, stats, problems))
    assert "ABAE, an ancient town." in text  # runs on into the next article
    assert problems == [
        "section 'S2' not on Page:EB1911 - Volume 02.djvu/1",
        "section 's9' not on Page:EB1911 - Volume 02.djvu/3",
    ]
    assert stats.missing_sections == 2 and stats.missing_pages == 0

    # A section still open at the end of the last page runs to the page's end, as on WikiSource.
    problems = []
    tag = '<pages index="EB1911 - Volume 02.djvu" from=1 to=1 fromsection=s2 tosection=s2 />'
    assert wikitext_to_text(assemble_article(tag, PAGES_2, ConvertStats(), problems)) == "ABADDON, the angel"
    assert problems == []
