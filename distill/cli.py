"""The command-line conventions every ``python -m distill...`` command shares.

One argparse class whose usage errors are one ``error:`` line (exit 2, through
:func:`distill.errors.cli_entry`), and one way to take a recipe: ``RECIPE.yaml [key=value ...]``
with ``--force`` / ``--resume`` where the command trains or rebuilds, loaded and validated by
:func:`distill.recipe.load_recipe`. Overrides may come before or after the options.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from distill import speed
from distill.errors import DistillError
from distill.recipe import Recipe, load_recipe


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors raise :class:`DistillError` (one line, exit 2) instead of exiting."""

    def error(self, message: str):
        raise DistillError(f"{message}; see {self.prog} --help")


def recipe_parser(prog: str, description: str, *, force: str | None = None, resume: str | None = None,
                  example: str = "student.alpha=0.7", **kwargs) -> ArgumentParser:
    """A parser taking ``RECIPE.yaml [key=value ...]``, plus ``--force`` / ``--resume`` when their help is given."""
    parser = ArgumentParser(prog=prog, description=description, **kwargs)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=f"recipe overrides, e.g. {example}")
    if force:
        parser.add_argument("--force", action="store_true", help=force)
    if resume:
        parser.add_argument("--resume", action="store_true", help=resume)
    return parser


def add_peak_option(parser: argparse.ArgumentParser) -> None:
    """``--peak-tflops``, for the MFU of commands that train (:mod:`distill.speed`); :func:`parse` applies it."""
    parser.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                        help="one device's peak TFLOP/s at the run's precision, for MFU in metrics.jsonl and the report "
                             "(default: a table of known GPUs; none on CPU); also DISTILL_PEAK_TFLOPS")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse with options and ``key=value`` overrides in any order; apply ``--peak-tflops`` when given."""
    args = parser.parse_intermixed_args(argv)
    speed.set_peak_from_cli(getattr(args, "peak_tflops", None))
    return args


def load(args: argparse.Namespace) -> Recipe:
    """The parsed command's recipe, with its overrides, validated."""
    return load_recipe(args.recipe, args.overrides)
