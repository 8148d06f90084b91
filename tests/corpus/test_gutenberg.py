"""The Project Gutenberg 1911 reader (``distill.corpus.gutenberg``), its wiring into ``convert``
and the CLI, on trimmed real slices (``tests/assets/gutenberg/README.md`` says what each keeps).

What the fixture articles are there for:

* ANDÚJAR, ANGLE, ANGLER, ANGLESEY (volume 2, slice 1; Latin-1 ``.txt``): ``[Greek: ...]`` across
  a line break, ``[Illustration: ...]`` between articles, page markers, old-style
  ``[Footnote N: ...]`` blocks, initials ``(P.C.Y.)``, italics, no article list;
* BACSANYI, BAHR-EL-GHAZAL, BAHUT (volume 3, slice 2): one blank line between articles,
  ``[Sidenote: ...]`` inside a sentence, ``[1] ...`` footnotes without a ``FOOTNOTES:`` heading;
* BRÉQUIGNY, BUKH[=A]R[=I], BULGARIA (volume 4, part 3) and BULGARIA (continued), BULGARIA,
  EASTERN, BUNTER (part 4): an article continued across two slices, accent codes, ``[)u]``, an
  ASCII table, a correction list after the last article;
* CAPERCALLY ... CAPRICORNUS (volume 5, slice 3): the ``ARTICLES IN THIS SLICE`` list (with
  ``CAPITO WOLFGANG`` for ``CAPITO (or KÖPFEL), WOLFGANG``), ``FOOTNOTES:`` blocks, ``[alpha]``,
  initials at the end of a paragraph ``... species.     (A. N.)``.

The tests near the end pin reader bugs found on these real texts (and fixed); each says the input
and the expected output.
"""
from __future__ import annotations

import functools
import gzip
import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from distill.corpus.__main__ import main
from distill.corpus.clean import clean_text
from distill.corpus.convert import convert_source
from distill.corpus.gutenberg import article_text, convert_slice
from distill.corpus.gutenberg_markup import inline_markup
from distill.corpus.gutenberg_slices import gutenberg_files, is_gutenberg_file, read_gutenberg_file
from distill.corpus.records import iter_records
from distill.errors import DistillError

REPO = Path(__file__).resolve().parent.parent.parent
ASSETS = REPO / "tests" / "assets" / "gutenberg"
SAMPLE = REPO / "corpora" / "britannica-1911-sample"

V02, V03, P3, P4, V05 = (
    "volume-02-slice-01.txt",
    "volume-03-slice-02.txt.gz",
    "volume-04-part-03.txt.gz",
    "volume-04-part-04.txt.gz",
    "volume-05-slice-03.txt.gz",
)
SLICE_TITLES = {  # convert_slice, file by file, in the order printed
    V02: ["Andújar", "Angle", "Angler", "Anglesey, Arthur Annesley"],
    V03: ["Bacsanyi, Janos", "Bahr-El-Ghazal", "Bahut"],
    P3: ["Bréquigny, Louis George Oudard Feudrix de", "Bukhārī", "Bulgaria"],
    P4: ["Bulgaria", "Bulgaria, Eastern", "Bunter"],
    V05: ["Capercally", "Capern, Edward", "Capito", "Cappel", "Cappel, Louis", "Capricornus"],
}
# convert_source over the folder: reading order, BULGARIA's two parts joined into one article.
TITLES = SLICE_TITLES[V02] + SLICE_TITLES[V03] + SLICE_TITLES[P3] + SLICE_TITLES[P4][1:] + SLICE_TITLES[V05]
INITIALS = ["(P.C.Y.)", "(A. N.)", "(D. B. MA.)", "(J. D. B.)", "(P. A. K.)", "(J. A. H.)", "(W. E. G.; F. R. C.)", "(C. B.*)"]


def raw_text(name: str) -> str:
    """A fixture's text read without the reader: Latin-1 ``.txt`` or UTF-8 ``.txt.gz``, LF line ends."""
    data = (ASSETS / name).read_bytes()
    text = gzip.decompress(data).decode("utf-8") if name.endswith(".gz") else data.decode("latin-1")
    return text.replace("\r\n", "\n")


def raw_paragraph(name: str, start: str) -> str:
    """The source paragraph (hard-wrapped lines) that begins with ``start`` after a blank line."""
    text = raw_text(name)
    begin = text.index("\n\n" + start) + 2
    return text[begin: text.index("\n\n", begin)]


def strip_markup(paragraph: str) -> str:
    """What of a source paragraph is prose: sidenotes, page markers, footnote marks and italics go."""
    paragraph = re.sub(r"\[Sidenote:.*?\]", " ", paragraph, flags=re.S)
    paragraph = re.sub(r"\[v\.\d+ p\.\d+\]", " ", paragraph)
    paragraph = re.sub(r"\[\d+\]", "", paragraph)
    return paragraph.replace("_", "")


@functools.lru_cache(maxsize=None)
def folder_report():
    return convert_source(ASSETS)


def articles() -> dict:
    """Title -> body of every article of the fixture folder (titles are unique there)."""
    return {article.title: article.body for article in folder_report().articles}


def paragraphs(title: str) -> list[str]:
    return articles()[title].split("\n")


def copy_assets(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for path in ASSETS.iterdir():
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("name", list(SLICE_TITLES))
def test_each_slice_gives_its_articles_in_order(name):
    report = convert_slice(ASSETS / name)
    titles = [article.title for article in report.articles]
    assert titles == SLICE_TITLES[name]
    # BRÉQUIGNY's "continued from part 2": see test_a_continuation_after_a_full_headword_is_recognised
    continued = [article.title for article in report.articles if article.continued and not article.title.startswith("Bréquigny")]
    assert continued == (["Bulgaria"] if name == P4 else [])


def test_the_folder_gives_every_article_once_in_reading_order():
    assert [path.name for path in gutenberg_files(ASSETS)] == [V02, V03, P3, P4, V05]  # not README.md
    titles = [article.title for article in folder_report().articles]
    assert titles == TITLES
    assert folder_report().summary()["dropped"] == {}


def test_listed_found_and_missing_per_slice():
    summary = folder_report().summary()["gutenberg"]
    per_slice = {item["file"]: (item["listed"], item["found"], item["missing"]) for item in summary["per_slice"]}
    # Only volume 5 slice 3 has an ARTICLES IN THIS SLICE list: six entries, all found
    # ("CAPITO WOLFGANG" matches the headword CAPITO by its start).
    assert per_slice == {V02: (0, 0, []), V03: (0, 0, []), P3: (0, 0, []), P4: (0, 0, []), V05: (6, 6, [])}
    assert (summary["slices"], summary["listed"], summary["found"], summary["found_fraction"]) == (5, 6, 6, 1.0)


@pytest.mark.parametrize(
    "removed, missing",
    [("CAPERN, EDWARD (1819-1894)", ["CAPERN"]), ("CAPITO (or KÖPFEL)", ["CAPITOWOLFGANG"]), ("CAPPEL, LOUIS (1585", ["CAPPEL"])],
)
def test_a_listed_article_that_is_not_there_is_missing(removed, missing):
    text = raw_text(V05)
    start = text.index(removed)
    end = text.index("\n\n\n", start)
    report = convert_slice(ASSETS / V05, text=text[:start] + text[end:].lstrip("\n"))
    assert (report.listed, report.found, report.missing) == (6, 5, missing)


def test_no_project_gutenberg_text_or_front_matter_in_any_article():
    for phrase in (
        "Project Gutenberg", "gutenberg.org", "gutenberg.net", "*** START", "*** END", "pgdp.net", "Produced by",
        "Transcriber's note", "E-Text Edition", "ELEVENTH EDITION", "INITIALS USED", "ARTICLES IN THIS SLICE",
        "PRINCIPAL UNSIGNED", "In the article CALCITE", "signifies",
    ):
        assert phrase in "".join(raw_text(name) for name in SLICE_TITLES)
        assert [title for title, body in articles().items() if phrase in title + body] == [], phrase


def test_no_markup_is_left_in_any_article():
    residue = ["[Illustration", "[Sidenote", "[Greek:", "[=", "[)", "[v.", "+---", "|", "FOOTNOTE", "[Footnote", "[1]", "[2]", "[alpha]"]
    for title, body in articles().items():
        assert [mark for mark in residue if mark in body] == [], title
        assert re.search(r"\[[A-Za-z]\.\]", body) is None, title  # dot-below codes such as [h.]
        if title != "Bunter":  # a stray underscore in its source: see test_stray_italic_underscores_are_removed
            assert "_" not in body, title


@pytest.mark.parametrize(
    "code, text", [("[=a]", "ā"), ("[)u]", "ŭ"), ("[h.]", "ḥ"), ("[H.]", "Ḥ"), ("[alpha]", "α"), ("[Greek: logos]", "logos"), ("[Greek: K[=o]s]", "Kōs")]
)
def test_codes_become_letters(code, text):
    assert inline_markup(f"x {code} y") == f"x {text} y"


def test_codes_in_the_real_articles_become_letters():
    bukhari = next(body for title, body in articles().items() if title.startswith("Bukh"))
    assert bukhari.startswith("BUKHĀRĪ [Mahommed ibn Ismā'īl al-Bukhārī] (810-872), Arabic author")
    assert "(ḥadīth) from Mahomet" in bukhari and "Aḥmad Ibn Ḥanbal" in bukhari and "his Ṣaḥīḥ, a collection" in bukhari
    assert "(Bulgarian, Sŭbranïe, the Russian form" in articles()["Bulgaria"]
    assert "departments (okrŭg, pl. okrŭzi)" in articles()["Bulgaria"]
    assert "An interesting member of this constellation is α-Capricorni, a pair" in articles()["Capricornus"]
    assert "the Gr. ankos, a bend; both connected" in articles()["Angle"]  # "[Greek:\nankos]"


def test_footnotes_become_the_last_paragraphs_of_their_article():
    capercally = paragraphs("Capercally")
    assert capercally[0].startswith("CAPERCALLY, or CAPERKALLY, a bird's name commonly derived from the Gaelic capull,")
    assert "the T. urogalloides of Dr von Middendorff, which is smaller" in capercally[2]
    assert capercally[-2:] == [
        'This is the spelling of the old law-books, as given by Pennant, the zoologist, who, on something more than mere '
        'report, first included this bird among the British fauna. The only one of the "Scots Acts," however, in which '
        'the present writer has been able to ascertain that the bird is named is No. 30 of James VI. (1621), which was '
        'passed to protect "powties, partrikes, moore foulles, blakcoks, gray hennis, termigantis, quailzies, capercailzies," &c.',
        "Not to be confounded with the bird so named previously by Prof. Nilsson, which is a hybrid.",
    ]
    anglesey = paragraphs("Anglesey, Arthur Annesley")  # [Footnote N: ...] blocks, printed before AUTHORITIES
    assert anglesey[-7].startswith("AUTHORITIES.--Dict. of Nat. Biography, with authorities there collected;")
    assert anglesey[-6:] == [
        "Protests of the Lords, by J.E. Thorold Rogers (1875), i. 27: Carti's Life of Ormonde (1851), iv. 234; Parl. Hist. iv. 284.",
        "Carti's Ormonde, iv. 330, 340.",
        "Cal. of State Pap. Dom. (1673-1675), p. 152.",
        "Memoirs, 8, 9.",
        "By Sir J. Thompson, his son-in-law. Reprinted in Somers Tracts (Scott, 1812), viii. 344, and in Parl. Hist. iv. app. xvi.",
        "Diary (ed. Wheatley, 1904), iv. 298, vii. 14.",
    ]
    assert 'carried away into foreign parts and all trade fail for want of money." He especially' in anglesey[0]
    bahr = paragraphs("Bahr-El-Ghazal")  # "[1] text" after the initials, no FOOTNOTES: heading
    assert "a designation also used as an alternative name for the Lol, another tributary" in bahr[0]
    assert bahr[-2].startswith("The Lol is also called the Kir, a name given likewise to the lower course of the Bahr-el-Homr.")
    assert bahr[-1] == "Including Miss Tinné's mother and aunt and Dr Steudner."


def test_author_initials_are_removed():
    everything = "".join(raw_text(name) for name in SLICE_TITLES)
    for initials in INITIALS:
        assert initials in everything
        assert [title for title, body in articles().items() if initials in body] == [], initials
    assert paragraphs("Capercally")[-3].endswith("under the name of T. medius, as though a distinct species.")
    assert paragraphs("Bacsanyi, Janos")[-1].endswith("He died at Linz on the 12th of May 1845.")


def test_an_ascii_table_is_removed_and_counted():
    assert convert_slice(ASSETS / P4).tables == 1
    assert folder_report().summary()["gutenberg"]["tables_removed"] == 1
    bunter = paragraphs("Bunter")
    before = next(i for i, p in enumerate(bunter) if p.endswith("as is shown by the following table:--"))
    assert bunter[before + 1].startswith("The material forming the Bunter beds of England came probably from the north-west")
    assert not any(cell in articles()["Bunter"] for cell in ("Staffordshire.", "500-750 ft.", "Absent", "|", "+--"))


def test_hard_wrapped_lines_become_one_line_per_paragraph():
    source = raw_paragraph(V05, "CAPERN, EDWARD")
    assert source.count("\n") == 12
    assert articles()["Capern, Edward"] == " ".join(line.strip() for line in source.split("\n")).replace("_", "")
    assert len(paragraphs("Angle")) == 2  # two paragraphs around the [v.02 p.0015] page marker
    assert len(paragraphs("Capercally")) == 4 + 2  # four paragraphs, two footnotes


def test_a_hyphen_at_line_end_joins_without_a_space():
    # ANDÚJAR's paragraph hard-wrapped again at widths that break "Madrid-Cordova" after its hyphen.
    source = " ".join(raw_paragraph(V02, "ANDÚJAR").split())
    widths = [width for width in range(25, 75) if any(line.endswith("-") for line in textwrap.wrap(source, width))]
    assert widths
    for width in widths:
        text, _ = article_text("\n".join(textwrap.wrap(source, width)))
        assert text == source.replace("_", "")
        assert "the Madrid-Cordova railway" in text


@pytest.mark.parametrize(
    "name, start, title",
    [(V03, "BAHR-EL-GHAZAL, the chief", "Bahr-El-Ghazal"), (V02, "ANGLESEY, ARTHUR ANNESLEY", "Anglesey, Arthur Annesley")],
)
def test_every_word_of_a_prose_paragraph_survives(name, start, title):
    source = raw_paragraph(name, start)  # sidenote, page marker, footnote marks, italics
    assert not any(line.endswith("-") for line in source.split("\n"))
    assert strip_markup(source).split() == paragraphs(title)[0].split()


def test_an_article_continued_across_two_slices_is_joined_once():
    titles = [article.title for article in folder_report().articles]
    assert titles.count("Bulgaria") == 1 and titles.index("Bulgaria") < titles.index("Bulgaria, Eastern")
    body = articles()["Bulgaria"]
    assert body.startswith("BULGARIA, a kingdom of south-eastern Europe, situated in the north-east of the Balkan Peninsula")
    assert body.count("BULGARIA") == 1 and "continued" not in body
    parts = ["run almost parallel to the Danube, ...", "... the mean interval being 60 m.; the summits are", "Bulgaria is a constitutional monarchy"]
    assert [body.count(part) for part in parts] == [1, 1, 1]
    assert body.index(parts[0]) < body.index(parts[1]) < body.index(parts[2])
    assert "Bulgars of the Volga" not in body and "Bulgars of the Volga" in articles()["Bulgaria, Eastern"]


def test_a_continuation_without_its_first_part_stays_an_article(tmp_path):
    source = tmp_path / "slices"
    source.mkdir()
    shutil.copy(ASSETS / P4, source / P4)
    first = convert_source(source).articles[0]
    assert first.title == "Bulgaria" and first.body.strip().startswith("... the mean interval being 60 m.")


def test_latin1_txt_and_utf8_gz_read_the_same(tmp_path):
    data = (ASSETS / V02).read_bytes()
    assert b"\r\n" in data and "ANDÚJAR".encode("latin-1") in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    as_gz = tmp_path / (V02 + ".gz")
    as_gz.write_bytes(gzip.compress(data.decode("latin-1").encode("utf-8")))
    with_bom = tmp_path / V02
    with_bom.write_bytes(data.decode("latin-1").encode("utf-8-sig"))
    text = read_gutenberg_file(ASSETS / V02)
    assert text == read_gutenberg_file(as_gz) == read_gutenberg_file(with_bom)
    assert "\r" not in text and "THE ENCYCLOPÆDIA BRITANNICA" in text and "province of Jaén" in text

    def pairs(path):
        return [(a.title, a.body) for a in convert_slice(path).articles]

    assert pairs(ASSETS / V02) == pairs(as_gz) == pairs(with_bom)
    assert b"\r\n" in gzip.decompress((ASSETS / V05).read_bytes())  # the gzipped fixtures keep PG's CRLF too


def test_auto_detection_finds_the_slices_and_skips_other_files(tmp_path):
    assert sorted(p.name for p in ASSETS.iterdir() if is_gutenberg_file(p)) == sorted(SLICE_TITLES)
    auto = convert_source(ASSETS, "auto")
    explicit = convert_source(ASSETS, "gutenberg")
    assert [(a.title, a.body) for a in auto.articles] == [(a.title, a.body) for a in explicit.articles]
    assert auto.summary()["gutenberg"]["slices"] == 5  # README.md is not a slice

    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(ASSETS / V05, folder / V05)
    (folder / "notes.txt").write_text("Not a Project Gutenberg text.\n", encoding="utf-8")
    assert [a.title for a in convert_source(folder).articles] == SLICE_TITLES[V05]
    with pytest.raises(DistillError, match="notes.txt"):
        convert_source(folder, "gutenberg")
    assert [a.title for a in convert_source(ASSETS / V05).articles] == SLICE_TITLES[V05]  # one file as the source


def test_a_damaged_slice_is_an_error_not_skipped(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    shutil.copy(ASSETS / V05, folder / V05)
    (folder / P4).write_bytes((ASSETS / P4).read_bytes()[:3000])  # a download cut short
    for fmt in ("auto", "gutenberg"):
        with pytest.raises(DistillError, match=f"{P4}: cannot be read"):
            convert_source(folder, fmt)


def test_two_sources_with_the_same_slices_give_each_article_once(tmp_path):
    first, second = copy_assets(tmp_path / "first"), copy_assets(tmp_path / "second")
    both = convert_source([first, second])
    assert [(a.title, a.body) for a in both.articles] == [(a.title, a.body) for a in folder_report().articles]
    summary = both.summary()
    assert summary["dropped"] == {"in an earlier source": len(folder_report().articles)}
    assert summary["gutenberg"]["slices"] == 10


def test_cli_convert_writes_one_file_per_article_and_a_summary(tmp_path, capsys):
    out = tmp_path / "text"
    assert main(["convert", "--source", str(ASSETS), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    files = sorted(out.glob("*.txt"))
    assert len(files) == summary["articles"] == len(folder_report().articles)
    written = {path.read_text(encoding="utf-8").split("\n", 1)[0]: path.read_text(encoding="utf-8") for path in files}
    assert written == {a.title: f"{a.title}\n{a.body}\n" for a in folder_report().articles}
    per_slice = {item["file"]: (item["found"], item["listed"]) for item in summary["gutenberg"]["per_slice"]}
    assert per_slice == {V02: (0, 0), V03: (0, 0), P3: (0, 0), P4: (0, 0), V05: (6, 6)}

    again = tmp_path / "again"
    first, second = copy_assets(tmp_path / "a"), copy_assets(tmp_path / "b")
    assert main(["convert", "--source", str(first), "--source", str(second), "--out", str(again)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in again.glob("*.txt")) == [p.name for p in files]
    assert summary["dropped"] == {"in an earlier source": len(files)} and len(summary["gutenberg"]["per_slice"]) == 10


def test_cli_all_builds_splits_from_the_slices(tmp_path, capsys):
    out = tmp_path / "splits"
    argv = ["all", "--source", str(ASSETS), "--out", str(out), "--train-words", "6000", "--val-words", "1000", "--test-words", "1000"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert summary["budgets"] == {"train": 6000, "val": 1000, "test": 1000}
    titles = {name: manifest[name]["titles"] for name in ("train", "val", "test")}
    chosen = [title for names in titles.values() for title in names]
    assert len(chosen) == len(set(chosen)) and set(chosen) <= {clean_text(a.title) for a in folder_report().articles}
    for name, budget in summary["budgets"].items():
        assert 0 < summary[name]["words"] <= budget
        records = list(iter_records(out / f"{name}.txt"))
        assert [record.split("\n", 1)[0] for record in records] == titles[name]


def test_the_shipped_sample_has_no_markup_left_and_enough_words():
    files = sorted(SAMPLE.glob("*.txt"))
    assert len(files) >= 600
    texts = {path.name: path.read_text(encoding="utf-8") for path in files}
    assert sum(len(text.split()) for text in texts.values()) >= 500_000
    residue = re.compile(
        r"Project Gutenberg|gutenberg\.(org|net)|\*\*\* ?(START|END)|\[Illustration|\[Sidenote|\[Footnote|FOOTNOTE|\[Hebrew:|"
        r"\[=|\[\)|\+---|\[v\.\d+ p\.\d+\]|\[\d{1,3}\]|\[[A-Za-z]\.\]|\[(alpha|beta|gamma|delta|theta|lambda|mu|pi|sigma|omega|root|oo)\]|"
        r"\(_?continued (from|in) (part|volume|slice)"
    )
    assert {name: match.group(0) for name, text in texts.items() if (match := residue.search(text))} == {}
    for name, text in texts.items():
        title, body = text.split("\n", 1)
        assert title.strip() and body.strip() and text.endswith("\n"), name


# Reader bugs found on the real texts: each test states the expected output.


def test_trailing_corrections_list_is_not_article_text():
    # volume-04-part-03 ends "...the Danube, ...\n\n_(continued in part 4)_\n\n  *  *  *\n\n\nCorrections made to
    # printed original.\n\np. 499, History: ...": BULGARIA, BAHUT and BUNTER get that list as paragraphs.
    assert [title for title, body in articles().items() if "Corrections made to printed original" in body or "in original" in body] == []


def test_a_continuation_after_a_full_headword_is_recognised():
    # volume-04-part-03 opens with "[v.04 p.0498] BRÉQUIGNY, LOUIS GEORGE OUDARD FEUDRIX DE (_continued from\npart 2_)";
    # _CONTINUED_FROM is only tried right after the first word of the headword, so the article is not marked
    # continued (its first part, in volume-04-slice-04, is never joined) and "(continued from part 2)" stays.
    article = convert_slice(ASSETS / P3).articles[0]
    assert article.continued and "continued from" not in article.body


def test_a_headword_with_accent_codes_keeps_its_whole_title():
    assert SLICE_TITLES[P3][1] == "Bukhārī"
    assert [a.title for a in convert_slice(ASSETS / P3).articles][1] == "Bukhārī"


def test_a_bibliography_paragraph_stays_in_its_article():
    # The head pattern takes "AUTHORITIES.--C.J" as a headword (capitals, dots and dashes) followed by ". J".
    assert not any(title.startswith("Authorities") for title in articles())
    assert "AUTHORITIES.--C.J. Jireček, Das Furstenthum Bulgarien (Prague, 1891)" in articles()["Bulgaria"]


def test_stray_italic_underscores_are_removed():
    assert "the Bunter is called the Grès des Vosges, or the Grès principal, which comprises" in articles()["Bunter"]


def test_a_joined_article_has_no_empty_paragraph():
    assert "" not in paragraphs("Bulgaria")


def test_a_suspended_hyphen_keeps_its_space():
    # HUÉ, volume-13-slice-08 (PG #38964), two lines as printed. PG rejoined the words it found broken at
    # line ends, so the few line-end hyphens left in the slices are mostly suspended ones
    # ("grain-\nand fruit-producing" in LOUISIANA, volume-17-slice-01; "Propheten-\nund") or minus signs.
    source = (
        "Kim-Long and Nam-Pho forming a sort of commercial belt around it. Glass-\n"
        "and ivory-working are carried on, but otherwise industry is of only"
    )
    text, _ = article_text(source)
    assert text == (
        "Kim-Long and Nam-Pho forming a sort of commercial belt around it. Glass- and ivory-working are carried on, "
        "but otherwise industry is of only"
    )


def test_an_unclosed_transliteration_does_not_hide_the_next_one():
    # LATIN LANGUAGE, volume-16-slice-03 (PG #41685) lines 1079-1084 as printed: the "]" after "methios" is
    # missing, so everything to the paragraph's end is taken as that transliteration's content.
    source = (
        "    medially -_d_- (_medius_; Osc. _mefio_-; Gr. [Greek: messos, mesos]\n"
        "    from *[Greek: methios); except after _u_ (_iubere_ beside _iussus_\n"
        '    for *_iudh-tos_; Sans. _yodhati_, "rouses to battle"); before _l_\n'
        "    (_stabulum_, but Umb. _staflo_-, with the suffix of Gr. [Greek:\n"
        "    otergêthron], &c.); before or after _r_ (_verbum_: Umb. _verfale_:\n"
        "    Eng. _word_. Lat. _glaber_ [v. inf].: Ger. _glatt_: Eng. _glad_)."
    )
    text, _ = article_text(source)
    assert "[Greek" not in text and "with the suffix of Gr. otergêthron, &c.); before or after r (verbum:" in text


def test_sources_dedupe_whole_titles_not_first_words(tmp_path):
    # Source A has CAPPEL (a French family), source B has CAPPEL, LOUIS: both are different articles,
    # but B's is dropped as "in an earlier source".
    text = raw_text(V05)
    louis, family, after = text.index("CAPPEL, LOUIS (1585"), text.index("CAPPEL, a French family"), text.index('CAPRICORNUS ("THE GOAT")')
    for name, part in (("a", text[:louis] + text[after:]), ("b", text[:family] + text[louis:])):
        (tmp_path / name).mkdir()
        (tmp_path / name / V05).write_bytes(gzip.compress(part.encode("utf-8")))
    titles = [a.title for a in convert_source([tmp_path / "a", tmp_path / "b"]).articles]
    assert "Cappel" in titles and "Cappel, Louis" in titles


def test_the_shipped_sample_has_no_transliteration_brackets():
    assert [path.name for path in sorted(SAMPLE.glob("*.txt")) if "[Greek:" in path.read_text(encoding="utf-8")] == []


def test_the_shipped_sample_has_no_italic_underscores():
    # An underscore glued to the start of a word, or to the end of one before a space or punctuation;
    # subscripts (σ_n, σ_(n+1)) and the drawn formulae of CAPILLARY ACTION are not italics.
    italic = re.compile(r"(?<![\w)\]}])_(?=[^\W\d_])|(?<=[^\W\d_])_(?=[\s.,;:)]|$)", re.M)
    assert [path.name for path in sorted(SAMPLE.glob("*.txt")) if italic.search(path.read_text(encoding="utf-8"))] == []
