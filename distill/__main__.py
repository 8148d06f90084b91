"""``python -m distill run RECIPE [key=value ...] [--force] [--from STAGE]``: the whole pipeline.

    python -m distill run recipes/tiny.yaml
    python -m distill run recipes/tiny.yaml student.alpha=0.7 output_dir=models/tiny-a07
    python -m distill run recipes/tiny.yaml --from student     # retrain the student, then evaluate again

The stages, in order; each reads the previous ones' files under the recipe's ``output_dir`` and is
the same as its own command:

    1 corpus     corpus/{train,val,test}.txt, manifest.json   python -m distill.corpus all --recipe RECIPE
    2 tokenizer  tokenizer/                                   python -m distill.tokenizer RECIPE
    3 teachers   teachers/<name>/                             accelerate launch -m distill.teacher RECIPE
    4 student    student/ (and baseline/)                     accelerate launch -m distill.student RECIPE
    5 evaluate   report/report.{json,md}, report/plots/       python -m distill.evaluate RECIPE
    6 samples    report/samples.md (three samples)            python -m distill.generate MODEL_DIR PROMPT

A stage whose outputs are complete is skipped. Outputs that are out of date are redone, as the
stage commands do it, and the log says why (:func:`distill.artifacts.why_stale`): a corpus built with other budgets, seed or facts, a tokenizer trained on
another train split or with another vocabulary size, a model trained with another tokenizer, other
teachers or other settings in its recipe section; the report and the samples whenever a model or
their settings change (``run.json`` in ``output_dir`` records what they were made from). So give
a run with other settings its own ``output_dir=...`` to keep the first one. Training that stopped
with a checkpoint (SIGTERM, exit code 143) continues with ``--resume``. ``--from STAGE`` redoes
STAGE and every later one; ``--force`` redoes everything. The run stops at the first failing stage
and exits with its code. While one run works in an output folder (this command or any stage's), a
second one there stops at once.

Every stage runs in this one process, through the stage modules' ``run`` functions, with one
Accelerate state (one process group, one mixed precision for every model): right for a CPU or one
GPU. With several GPUs run the training stages yourself, e.g. ``accelerate launch
--multi_gpu --num_processes 4 -m distill.teacher RECIPE`` (and ``-m distill.student``), then this
command to do the rest; it skips what is done.
"""
from __future__ import annotations

import argparse
import sys

from distill import sweep
from distill.cli import ArgumentParser, add_peak_option
from distill.errors import DistillError, cli_entry
from distill.pipeline import RUNS, STAGES, run_pipeline  # noqa: F401 (RUNS: the stage functions, as before)
from distill.recipe import load_recipe
from distill.speed import set_peak_from_cli

STAGE_COMMANDS = """stage commands (each also runs on its own; see its --help):
  python -m distill.corpus {scrape,convert,combine,clean,split,all}   build the corpus splits
  python -m distill.tokenizer RECIPE                                  train the BPE tokenizer
  accelerate launch -m distill.teacher RECIPE                         train the teachers
  accelerate launch -m distill.student RECIPE                         distill the student (and the baseline)
  python -m distill.evaluate RECIPE                                   report.json, report.md, plots
  python -m distill.generate MODEL_DIR "London was"                   text from a trained model
  python -m distill.serve RECIPE                                      a local web page to try the models"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m distill",
        description="Train small language models by knowledge distillation, from raw encyclopedia text.",
        epilog=STAGE_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,sweep}", parser_class=ArgumentParser)
    run = sub.add_parser(
        "run",
        help="the whole pipeline on a recipe: corpus, tokenizer, teachers, student, evaluate, samples",
        description=__doc__.split("\n\n", 1)[1].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    run.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="recipe overrides, e.g. student.alpha=0.7")
    run.add_argument("--force", action="store_true", help="redo every stage, even those whose outputs are complete")
    run.add_argument("--from", dest="start", choices=STAGES, metavar="STAGE",
                     help=f"redo STAGE and every later one ({', '.join(STAGES)}); earlier ones run only when not up to date")
    add_peak_option(run)
    sweep.add_parser(sub)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_peak_from_cli(getattr(args, "peak_tflops", None))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "sweep":
        return sweep.main(args)
    if args.force and args.start:
        raise DistillError("--force and --from: give one (--force redoes every stage, --from STAGE redoes STAGE and later ones)")
    return run_pipeline(load_recipe(args.recipe, args.overrides), force=args.force, start=args.start)


if __name__ == "__main__":
    raise SystemExit(main())
