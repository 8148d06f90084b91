"""Bytes per token against quality: students from live teachers, top-k + tail caches and sampled caches.

    python bench/cache_quality.py recipes/tiny.yaml --seeds 0 1 2 [key=value ...]
        [--top-k 8 32 64] [--samples 4 12 32]

Needs nothing but the recipe: the corpus, tokenizer and teachers are made (or reused) like
``python -m distill run`` makes them. Every variant trains the recipe's student with the same
seeds, data order and steps through :mod:`distill.sweep` (finished ones are reused, so a rerun
only writes the table): (a) live teachers, (b) the top-k + tail cache at each ``--top-k``,
(c) the sampled cache at each ``--samples``. For each it reports the cache's bytes per token and
build time (from the cache's manifest), the student's training tokens/s, and the mean over seeds
(± the 95% interval) of validation perplexity and BLiMP, and the ratio of validation perplexity to
the live student's (same seed). The table goes to the ``cache_quality`` section of bench/RESULTS.md
(``--no-write`` to skip).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "cache_quality"
ENABLED = "student.logit_cache.enabled"


def variants(top_ks: list[int], samples: list[int]) -> list[dict[str, str]]:
    out = [{ENABLED: "false"}]
    out += [{ENABLED: "true", "student.logit_cache.method": "topk_tail", "student.logit_cache.top_k": str(k)} for k in top_ks]
    out += [{ENABLED: "true", "student.logit_cache.method": "sampled", "student.logit_cache.samples": str(n)} for n in samples]
    return out


def label(settings: dict[str, str]) -> str:
    if settings.get(ENABLED) != "true":
        return "live teachers"
    if settings["student.logit_cache.method"] == "sampled":
        return f"sampled, {settings['student.logit_cache.samples']} samples"
    return f"top-{settings['student.logit_cache.top_k']} + tail"


def cache_figures(job) -> dict:
    """Bytes per token and build time of the cache a job trained from (none for live teachers)."""
    from distill.logit_cache import TeacherLogitCache

    if not job.recipe.student.logit_cache.enabled:
        return {"bytes_per_token": None, "build_time_s": None}
    cache = TeacherLogitCache.open(job.recipe.paths.teacher_logits, verify=False)
    return {"bytes_per_token": cache.bytes_per_token, "build_time_s": cache.manifest.get("build_time_s")}


def tokens_per_s(folder: Path) -> float | None:
    """Training tokens per second of a finished run (distill.json: train_tokens / wall_time_s)."""
    metrics = json.loads((folder / "distill.json").read_text(encoding="utf-8")).get("metrics") or {}
    return metrics["train_tokens"] / metrics["wall_time_s"] if metrics.get("wall_time_s") else None


def _ci(stat: dict, spec: str) -> str:
    if stat["mean"] is None:
        return "–"
    return format(stat["mean"], spec) + (f" ± {format(stat['ci95'], spec)}" if stat["ci95"] else "")


def table(sweep, rows: list[dict]) -> list[str]:
    from distill.sweep_report import mean_ci, summarise

    splits = list(sweep.base.evaluate.splits)
    summaries, _ = summarise(rows, [v.settings for v in sweep.variants], splits)
    live = {s["seed"]: s["val_ppl"] for s in summaries[0]["seeds"]}
    lines = ["| targets | bytes/token | cache build s | student tokens/s | val ppl | vs live | BLiMP |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for variant, summary in zip(sweep.variants, summaries):
        jobs = [job for job in sweep.jobs if job.variant is variant]
        cache = cache_figures(jobs[0])
        speed = mean_ci([tokens_per_s(job.folder) for job in jobs])
        ratio = mean_ci([s["val_ppl"] / live[s["seed"]] for s in summary["seeds"] if s["seed"] in live])
        val, blimp = summary["summary"]["val_ppl"], summary["summary"]["blimp"]
        lines.append(f"| {label(variant.settings)} | {cache['bytes_per_token'] or '–'} | "
                     f"{format(cache['build_time_s'], '.1f') if cache['build_time_s'] else '–'} | {speed['mean']:,.0f} | "
                     f"{_ci(val, '.2f')} | {_ci(ratio, '.3f')} | {_ci(blimp, '.1%')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides (every variant)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--top-k", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 12, 32])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_intermixed_args(argv)

    import torch

    from distill.sweep import execute, plan

    sweep = plan(args.recipe, args.overrides, args.seeds, variants=variants(args.top_k, args.samples))
    started = time.monotonic()
    done = execute(sweep)
    if isinstance(done, int):
        return done
    rows = [row for row in done[0] if row["role"] == "student"]
    command = " ".join(["python bench/cache_quality.py", args.recipe, *args.overrides, "--seeds", *map(str, args.seeds),
                        "--top-k", *map(str, args.top_k), "--samples", *map(str, args.samples)])
    student = sweep.base.student
    text = "\n".join([
        "## Teacher targets: bytes per token against student quality", "",
        f"Command: `{command}`", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads).", "",
        f"Recipe `{args.recipe}`: student alpha={student.alpha}, T={student.temperature}, {student.divergence}, "
        f"teachers {', '.join(t.name for t in sweep.base.teachers)}; seeds {', '.join(map(str, args.seeds))} (same initial "
        "weights, data order and steps for every row of a seed). Val ppl and BLiMP: mean ± 95% interval over seeds; "
        "vs live: val ppl over the live-teacher student's with the same seed. Bytes/token: the cache's files over its tokens. "
        "Tokens/s: the student's training (train_tokens / wall time, cache reads included, its build not).", "",
        *table(sweep, rows), "",
        f"This run took {time.monotonic() - started:.0f} s (finished variants are reused).",
    ]) + "\n"
    print(text)
    if not args.no_write:
        from results import write_section

        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
