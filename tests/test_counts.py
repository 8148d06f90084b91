"""distill.counts: the one parser of word counts (budgets, integer recipe keys)."""
from __future__ import annotations

import pytest

from distill.counts import format_count, parse_count
from distill.errors import DistillError


@pytest.mark.parametrize(
    "value, count",
    [
        ("400_000", 400_000), ("10_000_000", 10_000_000), ("500k", 500_000), ("10M", 10_000_000), ("10m", 10_000_000),
        ("1.5M", 1_500_000), ("2B", 2 * 10**9), ("1,000", 1_000), (" 7 ", 7), ("0", 0), (400_000, 400_000), (".5k", 500),
    ],
)
def test_counts(value, count):
    assert parse_count(value, "corpus.train_words") == count


@pytest.mark.parametrize("value", ["x", "ten", "10 words", "", "1e6", "5MB", "-5", "1.5", "1.0005k", True])
def test_not_a_count_names_the_key(value):
    with pytest.raises(DistillError, match=r"^--train-words: .* is not a word count; use a whole number of words such as 10_000_000, 10M"):
        parse_count(value, "--train-words")


def test_negative_count():
    with pytest.raises(DistillError, match=r"^--val-words: -5 is negative"):
        parse_count(-5, "--val-words")


@pytest.mark.parametrize("count, text", [(999, "999"), (1_000, "1k"), (50_000, "50k"), (1_500, "1.5k"), (1_000_000, "1M"),
                                         (2_500_000, "2.5M"), (1_234_567, "1.234567M"), (10**10, "10B")])
def test_format_count_is_exact_and_reads_back(count, text):
    assert format_count(count) == text and parse_count(text) == count
