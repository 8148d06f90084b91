"""clean: pinned on real Britannica lines, never merges articles, idempotent."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from distill.corpus.clean import clean_file, clean_text
from distill.corpus.records import format_record, read_split

# Real lines from the 1911 (WikiSource) and 1810 texts, after convert.
PINNED = [
    ("Blandrata was charged with “Italian vice”; Dávid renounced", 'Blandrata was charged with "Italian vice"; Dávid renounced'),
    ("Goldsmith’s She Stoops to Conquer (1887)", "Goldsmith's She Stoops to Conquer (1887)"),
    ("at Prémontré, a secluded marshy valley", "at Prémontré, a secluded marshy valley"),
    ("in the reign of Henry VIII., and of Louis XIV.", "in the reign of Henry VIII., and of Louis XIV."),
    ("At a later period, A.D.\u00a01115, Robert", "At a later period, A.D. 1115, Robert"),
    ("Lenoir, Architecture monastique (1852–1856)", "Lenoir, Architecture monastique (1852–1856)"),
    ("in some cases—e.g. Itzehoe—survived", "in some cases—e.g. Itzehoe—survived"),
    ("every essential feature of a monastery, — chapel", "every essential feature of a monastery,—chapel"),
    ("Carbonas Ferri præcipitatus; Cæsar; Œdipus", "Carbonas Ferri præcipitatus; Cæsar; Œdipus"),
    ("the ﬁrst of the ﬂowers", "the first of the flowers"),
    ("E. Long. 16° 10′. N. Lat. 46° 42′.", "E. Long. 16° 10′. N. Lat. 46° 42′."),
    ("the Greek δυναστεία of δυνάστης", "the Greek δυναστεία of δυνάστης"),
    ("cafe\u0301 and cafe\u0301", "café and café"),  # decomposed accents are composed (NFC)
    ("NASA, the BBC and XIV", "NASA, the BBC and XIV"),
    ("  spaced\tout  \n\n\n  paragraphs \r\nhere  ", "spaced out\nparagraphs\nhere"),
    ("a cut-\u00adoff\u200b word", "a cut-off word"),
    ("no <s>markers</s> inside", "no markers inside"),
    # Full-width ASCII (as OCR leaves it in formulae) becomes ASCII; other compatibility forms stay.
    ("ｐｖ＝ＲＴ，ａ＋ｂ（１）", "pv=RT,a+b(1)"),
    ("x ＝ 2y － 3 and the ＜ｓ＞ mark", "x = 2y - 3 and the mark"),
    ("ｆｉｇ．　２ and ⁴ and ½ and ㎞", "fig. 2 and ⁴ and ½ and ㎞"),
]


def test_pinned_examples():
    for raw, expected in PINNED:
        assert clean_text(raw) == expected, raw
        assert clean_text(expected) == expected, expected


def test_clean_never_merges_articles(tmp_path):
    articles = ["Abbey\n“cells” of anchorites\n\n", "Blank\nend of one </s>", "<s> Blanqui\nXIV café", "   \n\t"]
    source = tmp_path / "combined.txt"
    source.write_text("".join(format_record(a.replace("<s>", "").replace("</s>", "").strip()) for a in articles), encoding="utf-8")
    counts = clean_file(source, tmp_path / "cleaned.txt")
    assert counts == {"input_articles": 4, "articles": 3, "dropped_empty": 1}
    assert read_split(tmp_path / "cleaned.txt") == ['Abbey\n"cells" of anchorites', "Blank\nend of one", "Blanqui\nXIV café"]


TRICKY = "\u00a0\u2009\t\r\n\u2028 -—–―‐‘’“”ﬁæœé\u0301\u00ad\u200b<s/>\x00\x1f.aZ09＝＋－＜ｓ／＞Ａ　"
PIECES = ["<s>", "</s>", "＜ｓ＞", "--", "－－", " — ", "Ａ\u0301"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(TRICKY) | st.characters(), max_size=80) | st.lists(st.sampled_from(list(TRICKY) + PIECES), max_size=30).map("".join))
def test_clean_is_idempotent(text):
    once = clean_text(text)
    assert clean_text(once) == once
    assert "<s>" not in once and "</s>" not in once and "\n\n" not in once
    assert once == once.strip()


def test_marker_between_a_dash_and_a_space_is_idempotent():
    # Removing "<s>" once brought a space next to an em dash that a second clean then removed.
    for raw in ("a -- <s> b", "a －－ ＜ｓ＞ b", "a — </s> b"):
        once = clean_text(raw)
        assert once == "a—b" and clean_text(once) == once, raw
