"""How a run ends early: a user error (exit 2) or a stop with a saved checkpoint (exit 143)."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable


class DistillError(Exception):
    """An error caused by the user's input (a file, a key, a value), not by a bug.

    The message is one line that names what is wrong and how to fix it. Command-line entry
    points turn it into ``error: <message>`` on stderr and exit code 2.

    Raise it where an expected failure happens, at the boundary with the user's world: a file read
    (missing, not UTF-8, not valid JSON or safetensors), a folder to write that is a file, a device
    this machine lacks. Any other exception is a bug and keeps its traceback: nothing catches
    ``Exception`` wholesale to turn it into this.
    """


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT arrived during training; a checkpoint was saved. ``checkpoint`` is its folder."""

    def __init__(self, message: str, checkpoint: Path):
        super().__init__(message)
        self.checkpoint = checkpoint


def not_utf8(path, err: UnicodeDecodeError, fix: str, line: int | None = None) -> DistillError:
    """The error for a file that is not UTF-8 text, naming the file, the line, the first bad byte and ``fix``.

    ``err`` comes from decoding the whole file's bytes, or one line's when ``line`` is given.
    """
    if line is None:
        line = err.object.count(b"\n", 0, err.start) + 1
    return DistillError(f"{path}:{line}: not UTF-8 text (byte 0x{err.object[err.start]:02x}); {fix}")


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, what a shell reports for a process stopped by SIGTERM


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a ``main(argv)``, the one error handler of a command: a :class:`DistillError` prints one
    line and exits 2; a :class:`TrainingInterrupted` prints where its checkpoint is and exits 143;
    anything else propagates with its traceback (exit 1), as a bug should."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except DistillError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        except TrainingInterrupted as stop:
            print(str(stop), file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapper
