"""What converting WikiSource wikitext met: counts a user may want to know about.

Every step of :mod:`distill.corpus.wikitext` adds to the one :class:`ConvertStats` of a conversion;
``convert`` reports it in its summary.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class ConvertStats:
    """What a conversion met that a user may want to know about."""

    unknown_templates: collections.Counter = field(default_factory=collections.Counter)
    missing_pages: int = 0
    missing_sections: int = 0
    tables: int = 0  # wiki and HTML tables rendered as rows of cell text
    footnotes: int = 0  # footnotes moved to the end of their article
    scores: int = 0  # <score> music notation blocks dropped
