"""The summary of a sweep (:mod:`distill.sweep`): statistics over seeds, ``sweep.md``, ``sweep.json``, plots.

For each variant and metric the report gives the mean over seeds and the half-width of its 95%
confidence interval, ``t(0.975, n - 1) * s / sqrt(n)`` with ``s`` the sample standard deviation
(Student's t, because three seeds are few: t is 4.30 at n = 3, against 1.96 for the normal).
With one seed there is no interval. The student/baseline ratio is taken seed by seed (a student
against the baseline with the same seed: same initial weights and data order), then averaged: a
ratio below 1 means distillation helped.
"""
from __future__ import annotations

import math
import re
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from distill.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from distill.report import finish_png, new_figure

# t(0.975, df) for df = 1..30; beyond, the normal's 1.96 with the usual 1/df correction
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# (key in a row's metrics, column header, format, higher is better)
METRICS = (
    ("val_ppl", "val ppl", ".2f", False),
    ("test_ppl", "test ppl", ".2f", False),
    ("blimp", "BLiMP", ".1%", True),
    ("ratio", "student/baseline val ppl", ".3f", False),
    ("rep3", "rep-3", ".3f", False),
    ("distinct2", "distinct-2", ".3f", True),
    ("loop_length", "tokens before loop", ".1f", True),
    ("judge_ppl", "judge ppl", ".1f", False),
    ("wall_time_s", "train s", ".0f", False),
)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (table to 30, then 1.96 + 2.4/df)."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "ci95", "n", "values"}``: the mean and the half-width of its 95% interval (None for n = 1)."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return {"mean": None, "ci95": None, "n": 0, "values": []}
    n = len(values)
    ci = t975(n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else None
    return {"mean": statistics.fmean(values), "ci95": ci, "n": n, "values": values}


def row_metrics(entry: dict, splits: Sequence[str]) -> dict[str, float | None]:
    """The numbers of one evaluated model (an entry of :func:`distill.evaluate.evaluate_models`)."""
    ppl = entry.get("perplexity") or {}
    generation = entry.get("generation") or {}
    blimp = (entry.get("blimp") or {}).get("overall") or {}
    val, test = (splits[0] if splits else "val"), (splits[1] if len(splits) > 1 else "test")
    return {
        "val_ppl": (ppl.get(val) or {}).get("ppl"),
        "test_ppl": (ppl.get(test) or {}).get("ppl"),
        "blimp": blimp.get("accuracy"),
        "rep3": generation.get("rep3"),
        "distinct2": generation.get("distinct2"),
        "loop_length": generation.get("loop_length"),
        "judge_ppl": generation.get("judge_ppl"),
    }


def summarise(rows: list[dict], variants: list[dict[str, str]], splits: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Per variant and per baseline: every metric's mean and interval over seeds."""
    by_folder = {row["folder"]: row_metrics(row["entry"], splits) for row in rows}
    summaries = []
    for settings in variants:
        mine = [row for row in rows if row["variant"] == settings]
        per_seed = []
        for row in mine:
            metrics = dict(by_folder[row["folder"]], wall_time_s=row.get("wall_time_s"))
            base = by_folder.get(row.get("baseline") or "", {}).get("val_ppl")
            metrics["ratio"] = metrics["val_ppl"] / base if base and metrics["val_ppl"] else None
            per_seed.append({"seed": row["seed"], "folder": row["folder"], **metrics})
        stats = {key: mean_ci([s[key] for s in per_seed if s[key] is not None]) for key, *_ in METRICS}
        summaries.append({"settings": settings, "seeds": per_seed, "summary": stats})
    baselines: dict[str, list[dict]] = {}
    for row in rows:
        if row["role"] == "baseline" and row["variant"] is None:
            group = Path(row["folder"]).parent.parent.name
            baselines.setdefault(group, []).append({"seed": row["seed"], "folder": row["folder"], **by_folder[row["folder"]],
                                                    "wall_time_s": row.get("wall_time_s")})
    baseline_rows = [{"name": group, "seeds": seeds,
                      "summary": {key: mean_ci([s.get(key) for s in seeds if s.get(key) is not None]) for key, *_ in METRICS}}
                     for group, seeds in baselines.items()]
    return summaries, baseline_rows


def _cell(stat: dict, spec: str) -> str:
    if stat["mean"] is None:
        return "–"
    text = format(stat["mean"], spec)
    if stat["ci95"] is not None:
        text += " ± " + format(stat["ci95"], spec).rstrip("%") + ("%" if spec.endswith("%") else "")
    return text


def _columns(summaries: list[dict]) -> list[tuple]:
    """The metric columns with at least one value."""
    return [m for m in METRICS if any(s["summary"][m[0]]["n"] for s in summaries)]


def markdown_table(axes: Sequence[str], summaries: list[dict], baselines: list[dict], teachers: dict[str, dict]) -> str:
    columns = _columns(summaries + baselines)
    keys = [key.removeprefix("student.") for key in axes]
    header = [*keys, *(c[1] for c in columns), "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(keys) + ["---:"] * (len(columns) + 1)) + "|"]
    for s in summaries:
        cells = [s["settings"].get(key, "–") for key in axes] + [_cell(s["summary"][c[0]], c[2]) for c in columns]
        lines.append("| " + " | ".join(cells + [str(max(st["n"] for st in s["summary"].values()))]) + " |")
    for b in baselines:
        cells = [f"baseline (no distillation){'' if len(baselines) == 1 else ' ' + b['name']}"] + [""] * (len(keys) - 1)
        cells += [_cell(b["summary"][c[0]], c[2]) if c[0] != "ratio" else "1" for c in columns]
        lines.append("| " + " | ".join(cells + [str(b["summary"]["val_ppl"]["n"])]) + " |")
    for name, metrics in teachers.items():
        cells = [f"teacher {name}"] + [""] * (len(keys) - 1)
        cells += [format(metrics[c[0]], c[2]) if metrics.get(c[0]) is not None else "" for c in columns]
        lines.append("| " + " | ".join(cells + ["1"]) + " |")
    return "\n".join(lines)


def best_variant(summaries: list[dict]) -> dict | None:
    scored = [s for s in summaries if s["summary"]["val_ppl"]["mean"] is not None]
    return min(scored, key=lambda s: s["summary"]["val_ppl"]["mean"]) if scored else None


def _numeric(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _plot(axis: str, axes: dict[str, list[str]], summaries: list[dict], baselines: list[dict], metric: tuple) -> bytes:
    """``metric`` against ``axis``: one line per combination of the other swept keys, 95% error bars."""
    key, title, spec, _ = metric
    values = axes[axis]
    xs = _numeric(values) or list(range(len(values)))
    fig, ax = new_figure()
    others = [k for k in axes if k != axis]
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        if axis in s["settings"]:
            groups.setdefault(tuple(s["settings"].get(k, "–") for k in others), []).append(s)
    for group, members in groups.items():
        points = sorted((xs[values.index(m["settings"][axis])], m["summary"][key]) for m in members if m["summary"][key]["mean"] is not None)
        if not points:
            continue
        label = ", ".join(f"{k.removeprefix('student.')}={v}" for k, v in zip(others, group)) or "student"
        ax.errorbar([x for x, _ in points], [st["mean"] for _, st in points], yerr=[st["ci95"] or 0 for _, st in points],
                    marker="o", capsize=4, linewidth=1.4, label=label)
    for b in baselines:
        stat = b["summary"][key]
        if stat["mean"] is not None and key != "ratio":
            ax.axhline(stat["mean"], linestyle="--", color="grey", linewidth=1, label=f"baseline {b['name']}" if len(baselines) > 1 else "baseline")
    if key == "ratio":
        ax.axhline(1.0, linestyle="--", color="grey", linewidth=1, label="baseline (= 1)")
    if _numeric(values) is None:
        ax.set_xticks(xs, values)
    ax.set_xlabel(axis.removeprefix("student."))
    ax.set_ylabel(title)
    ax.set_title(f"{title} against {axis.removeprefix('student.')} (mean, 95% interval over seeds)")
    return finish_png(fig, ax)


def write_plots(axes: dict[str, list[str]], summaries: list[dict], baselines: list[dict], plots_dir: Path) -> list[Path]:
    written = []
    wanted = [m for m in METRICS if m[0] in ("val_ppl", "blimp", "ratio", "rep3")]
    for axis in axes:
        for metric in _columns(summaries):
            if metric not in wanted:
                continue
            path = plots_dir / f"sweep_{metric[0]}_vs_{re.sub(r'[^A-Za-z0-9_]+', '_', axis.removeprefix('student.'))}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, _plot(axis, axes, summaries, baselines, metric))
            written.append(path)
    return written


def write_sweep_report(sweep, rows: list[dict], teachers: dict[str, dict], out_dir: Path, *, command: str, wall_s: float) -> str:
    """Write ``sweep.md``, ``sweep.json`` and the plots into ``out_dir``; return the table."""
    splits = list(sweep.base.evaluate.splits)
    summaries, baselines = summarise(rows, [v.settings for v in sweep.variants], splits)
    teacher_rows = {name: row_metrics(entry, splits) for name, entry in teachers.items()}
    table = markdown_table(list(sweep.axes), summaries, baselines, teacher_rows)
    plots = write_plots(sweep.axes, summaries, baselines, out_dir / "plots")
    best = best_variant(summaries)
    data = {"format_version": 1, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command,
            "recipe": str(sweep.base.source), "axes": sweep.axes, "seeds": sweep.seeds, "wall_time_s": round(wall_s, 1),
            "variants": summaries, "baselines": baselines, "teachers": teacher_rows,
            "best": best["settings"] if best else None, "plots": [p.relative_to(out_dir).as_posix() for p in plots]}
    atomic_write_json(out_dir / "sweep.json", data)
    atomic_write_text(out_dir / "sweep.md", _markdown(data, table, splits))
    return table


def _markdown(data: dict, table: str, splits: Sequence[str]) -> str:
    seeds = data["seeds"]
    lines = [
        "# Sweep", "",
        f"`{data['command']}`", "",
        f"{data['created_utc']}; recipe `{data['recipe']}`; seeds {', '.join(map(str, seeds))}; "
        f"this run took {data['wall_time_s']:.0f} s (finished variants are reused, not retrained).", "",
        f"Each cell is the mean over seeds ± the half-width of its 95% interval (Student's t, n = {len(seeds)}). "
        f"Perplexity is CE only on the `{splits[0] if splits else 'val'}` and `{splits[1] if len(splits) > 1 else 'test'}` splits; "
        "student/baseline is the student's val perplexity over the baseline's with the same seed (below 1: distillation helped); "
        "train s is the student's training time.", "",
        table, "",
    ]
    if data["best"]:
        best = ", ".join(f"{key.removeprefix('student.')}={value}" for key, value in data["best"].items())
        lines += [f"Lowest mean val perplexity: {best or 'the recipe'}.", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in data["plots"]]
    return "\n".join(lines) + "\n"
