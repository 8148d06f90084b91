"""User-facing errors: one line that names the file or key and the fix, exit code 2."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class DistillError(Exception):
    """An error caused by the user's input (a file, a key, a value), not by a bug.

    The message is one line that names what is wrong and how to fix it. Command-line entry
    points turn it into ``error: <message>`` on stderr and exit code 2.
    """


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a ``main(argv)`` so a :class:`DistillError` prints one line and exits with code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except DistillError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapper
