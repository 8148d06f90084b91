"""bench/corpus_residue.py: exact counts on planted markup, and real text that must not count."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def residue():
    spec = importlib.util.spec_from_file_location("corpus_residue", REPO / "bench" / "corpus_residue.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


PLANTED = """Planted
He wrote _Hamlet_; snake_case_name and __init__ are code, not italics.
[Illustration: Fig. 1] and [Illustration]
[Sidenote: Early life.]
Greek [Greek: logos], [Hebrew: shalom] and [Coptic: tau].
Accents B[=a]li, [)u], [.q], [vs], [s.] but not [a], [ii], [vi], [iv.] or [sic].
Codes [alpha] [Sigma] [.chi] [root].
[v.02 p.0123] page.
A note.[1] The year [1911] is text.
[Footnote 1: x.]
FOOTNOTES:
[** amended from x]
+-----+----+
| a | b |
{{lang|fr}} [[Link]] <ref>r</ref> '''Bold''' and the prime R''' is text
rowspan=2 colspan=3 width:1em
Project Gutenberg, www.gutenberg.org, this EBook, *** START OF THIS, *** END OF THIS
full width ＝ and ＋
<math>a}}b|c|</math> \\(x_{1}}\\) costs $5 and $10 a year"""

EXPECTED = {
    "_word_": 1, "[Illustration": 2, "[Sidenote": 1, "[Greek:": 1, "[Hebrew:": 1, "[Coptic: etc.": 1,
    "[=a] accent code": 5, "[alpha] Greek/math code": 4, "[v. page marker": 1, "[1] footnote mark": 1,
    "[Footnote": 1, "FOOTNOTES / FOOTNOTE:": 1, "[** proofreader note": 1, "+--- table border": 1,
    "line with 2+ |": 1, "{{": 1, "}}": 1, "[[": 1, "<ref": 1, "''' wiki bold": 1, "rowspan": 1, "colspan": 1,
    "1em (CSS length)": 1, "Project Gutenberg": 1, "gutenberg.org": 1, "EBook": 1, "*** START OF": 1,
    "*** END OF": 1, "full-width ＝＋": 2, "<math": 1, "TeX math span": 1,
}  # fmt: skip


def test_planted_markup_is_counted_and_real_text_is_not(residue, tmp_path):
    (tmp_path / "a.txt").write_text(PLANTED, encoding="utf-8")
    (tmp_path / "b.txt").write_text("Clean\nPlain prose ending in _half\n", encoding="utf-8")
    (tmp_path / "c.txt").write_text("Other\nhalf_ begins this one, so no match spans two articles.", encoding="utf-8")
    tally = residue.scan(tmp_path, examples=2)
    assert tally.counts == EXPECTED
    assert tally.articles == 3 and tally.residue == sum(EXPECTED.values()) - 2  # <math and TeX are information
    assert all(0 < len(tally.examples[name]) <= 2 for name in EXPECTED)
    assert "_Hamlet_" in tally.examples["_word_"][0] and "\n" not in "".join(tally.examples["line with 2+ |"])


def test_a_record_file_counts_like_the_folder(residue, tmp_path):
    (tmp_path / "records.txt").write_text(f"<s> {PLANTED} </s>\n<s> Clean\nNothing here. </s>\n", encoding="utf-8")
    tally = residue.scan(tmp_path / "records.txt", examples=0)
    assert tally.counts == EXPECTED and tally.articles == 2 and tally.examples["_word_"] == []


def test_command_writes_json_and_a_results_section(residue, tmp_path, capsys):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text(PLANTED, encoding="utf-8")
    (tmp_path / "records.txt").write_text(f"<s> {PLANTED} </s>\n", encoding="utf-8")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- other:begin -->\nkept\n<!-- other:end -->\n", encoding="utf-8")
    argv = [str(tmp_path / "texts"), str(tmp_path / "records.txt"), "--name", "planted", "--json", str(tmp_path / "r.json"), "--results", str(results)]
    assert residue.main(argv) == 0
    out = capsys.readouterr().out
    assert "line with 2+ |" in out and "Examples:" in out
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["total"]["counts"]["[=a] accent code"] == 10 and data["total"]["words"] == 2 * data["inputs"][str(tmp_path / "records.txt")]["words"]
    text = results.read_text(encoding="utf-8")
    assert "<!-- other:begin -->\nkept" in text and "<!-- corpus_residue-planted:begin -->" in text
    assert "| `line with 2+ \\|` | 1 | 1 | 2 |" in text


def test_a_missing_input_exits_with_code_2(residue, tmp_path, capsys):
    assert residue.main([str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
