"""Does distillation help? The student against the no-distillation baseline over several seeds.

    python bench/distill_vs_baseline.py recipes/tiny.yaml --seeds 0 1 [key=value ...]

Needs the recipe's corpus, tokenizer and teachers (``python -m distill run recipes/tiny.yaml`` makes
them). For each seed, the student (the recipe's alpha, temperature, ...) and the baseline (alpha=1)
are trained with ``student.training.seed=S`` in ``{output_dir}/seeds/seed-S/``, which links to the
recipe's corpus, tokenizer, tokens and teachers, so both see the same teachers, data, steps and
initialisation per seed. A finished pair is reused. Prints the validation perplexity of both, their
ratio, and writes the table to a section of bench/RESULTS.md (``--no-write`` to skip).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "distill_vs_baseline"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_intermixed_args(argv)

    from distill.errors import DistillError
    from distill.recipe import load_recipe
    from distill.student import main as student_main

    recipe = load_recipe(args.recipe, args.overrides)
    root = recipe.paths.root
    for teacher in recipe.teachers:
        if not (recipe.paths.teacher(teacher.name) / "distill.json").is_file():
            print(f"error: {recipe.paths.teacher(teacher.name)}: train the teachers first: python -m distill run {args.recipe}", file=sys.stderr)
            return 2
    rows = []
    for seed in args.seeds:
        out = root / "seeds" / f"seed-{seed}"
        out.mkdir(parents=True, exist_ok=True)
        for name in ("corpus", "tokenizer", "tokens", "teachers"):
            link = out / name
            if not link.exists():
                os.symlink((root / name).resolve(), link)
        overrides = [*args.overrides, f"output_dir={out}", f"student.training.seed={seed}", "student.baseline=true"]
        started = time.time()
        try:
            code = student_main([args.recipe, *overrides])
        except DistillError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if code:
            return code
        figures = {}
        for run in ("student", "baseline"):
            info = json.loads((out / run / "distill.json").read_text(encoding="utf-8"))
            figures[run] = info["metrics"]
        rows.append((seed, figures["student"], figures["baseline"], time.time() - started))

    lines = [
        "## Distilled student vs no-distillation baseline",
        "",
        f"Command: `python bench/distill_vs_baseline.py {' '.join([args.recipe, *args.overrides])} --seeds {' '.join(map(str, args.seeds))}`",
        "",
        f"Student: alpha={recipe.student.alpha}, T={recipe.student.temperature}, {recipe.student.divergence}, "
        f"ensemble of {', '.join(t.name for t in recipe.teachers)} ({recipe.student.ensemble}); baseline: alpha=1. "
        "Same data, steps, batch and initialisation per seed. Validation perplexity is CE-only.",
        "",
        "| seed | steps | student val ppl | baseline val ppl | student / baseline |",
        "|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for seed, student, baseline, _ in rows:
        ratio = student["val_ppl"] / baseline["val_ppl"]
        ratios.append(ratio)
        lines.append(f"| {seed} | {student['steps']} | {student['val_ppl']:.2f} | {baseline['val_ppl']:.2f} | {ratio:.3f} |")
    wins = sum(r < 1 for r in ratios)
    lines += ["", f"The student is better in {wins} of {len(ratios)} seeds; mean ratio {statistics.mean(ratios):.3f}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        from results import write_section

        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
