"""Word counts as people write them: ``10_000_000``, ``10M``, ``1.5M``, ``500k``, ``1,000`` or an int.

The one parser behind the corpus budgets (``--train-words``, ``corpus.train_words``) and every
integer recipe key, so a count means the same wherever it is written.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from distill.errors import DistillError

_COUNT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMbBgG]?)")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_HINT = "use a whole number of words such as 10_000_000, 10M, 1.5M or 500k"
_UNITS = (("B", 10**9), ("M", 10**6), ("k", 10**3))


def parse_count(value: object, name: str = "word count") -> int:
    """A count of 0 or more from an int or a string such as ``"10_000_000"``, ``"10M"``, ``"1.5M"``,
    ``"500k"`` or ``"1,000"`` (suffixes k, M, B/G, any case; ``_`` and ``,`` group digits).

    Raises :class:`DistillError` naming ``name`` (the key or option) for anything else, including
    a bool, a negative number and a fraction of one (``"1.5"``, ``"1.0005k"``).
    """
    if isinstance(value, bool):
        raise DistillError(f"{name}: {value!r} is not a word count; {_HINT}")
    if isinstance(value, int):
        number = Decimal(value)
    else:
        text = str(value).strip().replace("_", "").replace(",", "")
        match = _COUNT.fullmatch(text)
        if not match:
            raise DistillError(f"{name}: {value!r} is not a word count; {_HINT}")
        try:
            number = Decimal(match.group(1)) * _SCALE[match.group(2).lower()]
        except InvalidOperation:
            raise DistillError(f"{name}: {value!r} is not a word count; {_HINT}") from None
    if number < 0:
        raise DistillError(f"{name}: {value!r} is negative; {_HINT}")
    if number != number.to_integral_value():
        raise DistillError(f"{name}: {value!r} is not a word count; {_HINT}")
    return int(number)


def format_count(count: int) -> str:
    """A count as people write it, exactly (:func:`parse_count` reads it back): ``1M``, ``2.5M``,
    ``100k``, ``1.234567M``, ``999``; the largest unit that leaves at least 1."""
    for unit, size in _UNITS:
        if count >= size:
            whole, rest = divmod(count, size)
            return f"{whole}{unit}" if not rest else f"{Decimal(count) / size:f}".rstrip("0") + unit
    return str(count)
