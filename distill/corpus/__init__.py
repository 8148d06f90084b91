"""The Britannica corpus: scrape WikiSource, convert to text, combine, clean, split.

Library entry points (the command line is ``python -m distill.corpus``):

* :func:`build_splits` -- every offline stage from a source folder to a split folder;
* :func:`read_split` -- the article texts of a split file (``<s> TEXT </s>`` records);
* :func:`clean_text` -- the idempotent normaliser applied to every article;
* :func:`split_by_word_budget` -- the deterministic O(n log n) assignment of articles to splits.
"""
from __future__ import annotations

from distill.corpus.build import build_splits
from distill.corpus.clean import clean_text
from distill.corpus.records import read_split
from distill.corpus.split import split_by_word_budget
from distill.counts import parse_count

__all__ = ["build_splits", "clean_text", "parse_count", "read_split", "split_by_word_budget"]
