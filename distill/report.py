"""The evaluation report: ``report.json``, ``report.md`` (models side by side) and training-curve plots.

:func:`write_report` takes the dict that :func:`distill.evaluate.evaluate_models` builds and each model
folder's ``metrics.jsonl`` rows, and writes, each file atomically::

    out_dir/plots/train_loss.png   train loss vs step (the KD blend for students), every model
    out_dir/plots/train_ce.png     train CE vs step (a teacher's loss is its CE)
    out_dir/plots/train_kl.png     train KL vs step (models that log one)
    out_dir/plots/val_ppl.png      validation perplexity vs epoch, every model
    out_dir/plots/words_*.png      learning curves in words seen (distill.word_curves, its report.md section)
    out_dir/report.md
    out_dir/report.json            written last: its presence means the report is complete

Plots use matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch).
"""
from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

from distill.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

PLOTS = {
    "train_loss": ("train loss (students: the KD blend)", "step"),
    "train_ce": ("train cross-entropy", "step"),
    "train_kl": ("train KL to the teachers", "step"),
    "val_ppl": ("validation perplexity (CE only)", "epoch"),
}
SHOWN_SAMPLES = 2  # continuations per model in report.md's "Generated text" (report.json keeps them all)


def read_metrics(model_dir: str | Path) -> list[dict]:
    """The rows of ``model_dir/metrics.jsonl`` ([] when absent); unreadable lines are skipped with a warning."""
    path = Path(model_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            # A run killed mid-write can leave a half line at the end; the rest is still good.
            warnings.warn(f"{path}:{number}: not valid JSON; skipped", stacklevel=2)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def curves(metrics: dict[str, list[dict]]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """``{plot name: {model: (xs, ys)}}`` from metrics rows; empty series are left out."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {name: {} for name in PLOTS}

    def add(plot: str, model: str, x, y) -> None:
        x, y = _number(x), _number(y)
        if x is not None and y is not None:
            xs, ys = out[plot].setdefault(model, ([], []))
            xs.append(x)
            ys.append(y)

    for model, rows in metrics.items():
        val_by_epoch: dict[float, float] = {}
        for row in rows:
            split = row.get("split")
            if split == "train":
                add("train_loss", model, row.get("step"), row.get("loss"))
                # No "kl" means no distillation: the loss is the CE itself.
                add("train_ce", model, row.get("step"), row.get("ce", row.get("loss") if "kl" not in row else None))
                add("train_kl", model, row.get("step"), row.get("kl"))
            elif split == "val":
                ppl = _number(row.get("ppl"))
                if ppl is None and _number(row.get("loss")) is not None and row["loss"] < 700:
                    ppl = math.exp(row["loss"])
                epoch = _number(row.get("epoch"))
                if epoch is not None and ppl is not None:
                    val_by_epoch[epoch] = ppl  # several evaluations in one epoch: the last one stands
        for epoch in sorted(val_by_epoch):
            add("val_ppl", model, epoch, val_by_epoch[epoch])
    return {name: series for name, series in out.items() if series}


def _render_png(title: str, xlabel: str, series: dict[str, tuple[list[float], list[float]]], log_y: bool,
                log_x: bool = False) -> bytes:
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    fig, ax = new_figure()
    for model, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, markersize=3, linewidth=1.4, label=model)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if log_y and all(y > 0 for _, ys in series.values() for y in ys):
        ax.set_yscale("log")
        plain = FuncFormatter(lambda y, _: f"{y:g}")  # 180, not 1.8 x 10^2
        ax.yaxis.set_major_formatter(plain)
        values = [y for _, ys in series.values() for y in ys]
        if max(values) / min(values) < 20:  # within about one decade the minor ticks carry the labels
            ax.yaxis.set_minor_formatter(plain)
    if xlabel == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    xs = [x for xs, _ in series.values() for x in xs]
    if log_x and xs and min(xs) > 0:  # counts such as words seen: 50k, 1M
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_count(x)))
        ax.xaxis.set_minor_formatter(NullFormatter())  # log minor labels (60k 70k 80k ...) run into each other
        if len(set(xs)) <= 12:  # label the counts that have points
            ax.set_xticks(sorted(set(xs)))
    return finish_png(fig, ax)


def new_figure():
    """A 7 x 4.2 inch matplotlib figure and its one axes, drawn without pyplot (no GUI, no global state)."""
    # matplotlib adds a few tenths of a second to every import of distill.evaluate; only plotting pays it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def finish_png(fig, ax) -> bytes:
    """Grid, legend and layout of a :func:`new_figure`, rendered as PNG bytes."""
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.canvas.print_png(buffer)
    return buffer.getvalue()


def plot_training_curves(metrics: dict[str, list[dict]], plots_dir: str | Path) -> list[Path]:
    """One PNG per metric in ``plots_dir`` (see the module doc); returns the files written.

    A known plot this call has no data for is removed, so an old figure never outlives its data.
    """
    plots_dir = Path(plots_dir)
    written = []
    data = curves(metrics)
    for name, (title, xlabel) in PLOTS.items():
        path = plots_dir / f"{name}.png"
        if name not in data:
            path.unlink(missing_ok=True)
            continue
        atomic_write_bytes(path, _render_png(title, xlabel, data[name], log_y=name == "val_ppl"))
        written.append(path)
    return written


def _fmt(value, spec: str = ".2f", missing: str = "–") -> str:
    value = _number(value)
    return missing if value is None else format(value, spec)


def _pct(block: dict | None) -> str:
    if not block or block.get("accuracy") is None:
        return "–"
    return f"{100 * block['accuracy']:.1f}%"


def human_count(n) -> str:
    n = _number(n)
    if n is None:
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], align: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _speed_cell(key: str, value: Any) -> str:
    if not value:
        return "–"
    return f"{100 * value:.1f}%" if key == "mfu" else f"{value:,.0f}"


def summary_table(report: dict) -> str:
    """The side-by-side table: one row per model."""
    splits = list(report.get("splits") or {})
    models = report.get("models") or {}
    has_blimp = any(m.get("blimp") for m in models.values())
    has_facts = any(m.get("facts") for m in models.values())
    has_text = any(m.get("generation") for m in models.values())
    trainings = [m.get("training") or {} for m in models.values()]
    speed_columns = {"tokens_per_s": "train tokens/s", "mfu": "MFU"}  # from each model's training metrics
    speeds = [key for key in speed_columns if any(t.get(key) for t in trainings)]
    header = ["model", "role", "arch", "params", "train steps"] + [speed_columns[key] for key in speeds]
    header += [f"{s} ppl" for s in splits]
    if has_blimp:
        header.append("BLiMP acc")
    if has_facts:
        header += ["fact mean rank", "fact mean logprob"]
    if has_text:
        header += ["rep-3", "distinct-2", "tokens before loop", "judge ppl"]
    rows = []
    for name, m in models.items():
        row = [name, m.get("role") or "", m.get("arch") or "", human_count(m.get("num_parameters")),
               _fmt((m.get("training") or {}).get("steps"), ".0f")]
        row += [_speed_cell(key, (m.get("training") or {}).get(key)) for key in speeds]
        row += [_fmt((m.get("perplexity") or {}).get(s, {}).get("ppl")) for s in splits]
        if has_blimp:
            blimp = m.get("blimp")
            row.append(f"{_pct(blimp['overall'])} (n={blimp['overall']['n']})" if blimp else "–")
        if has_facts:
            facts = m.get("facts")
            row += [_fmt(facts and facts["mean_rank"], ".1f"), _fmt(facts and facts["mean_logprob"])]
        if has_text:
            text = m.get("generation") or {}
            row += [_fmt(text.get("rep3"), ".3f"), _fmt(text.get("distinct2"), ".3f"), _fmt(text.get("loop_length"), ".1f"),
                    _fmt(text.get("judge_ppl"))]
        rows.append(row)
    return _table(header, ["l", "l", "l"] + ["r"] * (len(header) - 3), rows)


def _generation_context(settings: dict) -> str:
    """One clause for the line above the table: decoding, prompts and the judge of the generated text."""
    sampling = settings.get("sampling") or {}
    decoding = ("greedy" if settings.get("decoding") == "greedy" else
                "sampled with the recipe's generate: settings (" + ", ".join(f"{k} {v}" for k, v in sampling.items()) + ")")
    prompts = len(settings.get("prompts") or [])
    openings = settings.get("test_openings") or 0
    source = f", {openings} of them test-article openings" if openings else ""
    return (f"generated text: {decoding}, up to {settings.get('max_new_tokens')} new tokens after each of {prompts} prompts{source}; "
            f"judge ppl by `{settings.get('judge')}`")


def _generation_section(report: dict) -> list[str]:
    """``## Generated text``: what the text columns mean, then each model's first continuations."""
    models = {name: m["generation"] for name, m in (report.get("models") or {}).items() if m.get("generation")}
    if not models:
        return []
    judge = (report.get("generation") or {}).get("judge") or next(iter(models.values())).get("judge")
    out = ["## Generated text", "",
           "Each model continues the same prompts; the numbers are over its continuations, in its own tokens. "
           "**rep-3**: the share of a text's 3-grams that repeat an earlier 3-gram of the same text (seq-rep-3), averaged "
           "over texts; 0 = no repeats, higher = more looping. **distinct-2**: unique 2-grams over all 2-grams of all the "
           "model's texts together; higher = more varied. **tokens before loop**: mean tokens written before the first "
           "4-gram that already occurred (the whole text when none does, also when it ends early). **judge ppl**: perplexity "
           f"of the continuations given their prompts under `{judge}`; lower = more fluent to the judge, which favours its "
           "own text, and repetitive text can also score low, so read it with rep-3.", ""]
    for name, block in models.items():
        out += [f"### {name}", "", f"{_fmt(block.get('tokens'), '.1f')} tokens per continuation on average; the first ones:", ""]
        for sample in block.get("samples", [])[:SHOWN_SAMPLES]:
            text = sample["prompt"] + sample["text"]
            fence = "```"
            while fence in text:
                fence += "`"
            out += [f"{fence}text", text, fence, ""]
    return out


def render_markdown(report: dict, sections: Sequence[str] = ()) -> str:
    """The whole ``report.md``: summary table, BLiMP per file, fact probes, generated text, training curves."""
    models = report.get("models") or {}
    names = list(models)
    out = ["# Evaluation report", ""]
    splits = report.get("splits") or {}
    context = [f"perplexity: CE only, blocks of {report.get('seq_len')} tokens"] if splits else []
    context += [f"{name}: `{path}`" for name, path in splits.items()]
    if report.get("blimp_dir"):
        context.append(f"minimal pairs: `{report['blimp_dir']}`")
    if report.get("facts"):
        context.append(f"fact probes: `{report['facts']}`")
    if report.get("generation"):
        context.append(_generation_context(report["generation"]))
    out += [f"{report.get('created_utc', '')}; " + "; ".join(context) + ".", "", summary_table(report), ""]
    for note in report.get("notes") or []:
        out += [f"> note: {note}", ""]

    blimp = {n: m["blimp"] for n, m in models.items() if m.get("blimp")}
    if blimp:
        files = list(next(iter(blimp.values()))["per_file"])
        rows = []
        for file in files:
            first = next(iter(blimp.values()))["per_file"][file]
            rows.append([file, str(first["n"])] + [_pct(blimp[n]["per_file"].get(file)) if n in blimp else "–" for n in names])
        fields = sorted({f for b in blimp.values() for f in b.get("per_field", {})})
        for field in fields:
            n_field = next(b["per_field"][field]["n"] for b in blimp.values() if field in b.get("per_field", {}))
            rows.append([f"*field: {field}*", str(n_field)] + [_pct(blimp[n]["per_field"].get(field)) if n in blimp else "–" for n in names])
        overall_n = next(iter(blimp.values()))["overall"]["n"]
        rows.append(["**overall**", str(overall_n)] + [_pct(blimp[n]["overall"]) if n in blimp else "–" for n in names])
        out += ["## Minimal pairs (accuracy: good sentence more likely than bad)", "",
                _table(["file", "pairs", *names], ["l", "r"] + ["r"] * len(names), rows), ""]

    facts = {n: m["facts"] for n, m in models.items() if m.get("facts")}
    if facts:
        probes = next(iter(facts.values()))["probes"]
        rows = []
        for i, probe in enumerate(probes):
            cells = []
            for n in names:
                p = facts[n]["probes"][i] if n in facts else None
                cells.append(f"{p['rank']} ({p['logprob']:.2f})" if p else "–")
            rows.append([f"{probe['probe']} → {probe['answer']}", *cells])
        out += ["## Fact probes (rank of the answer's first token, 1 = top; log-probability of the whole answer)", "",
                _table(["probe → answer", *names], ["l"] + ["r"] * len(names), rows), ""]

    out += _generation_section(report)
    out += list(sections)  # e.g. distill.word_curves' learning curves
    plots = report.get("plots") or []
    if plots:
        out += ["## Training curves", ""]
        for plot in plots:
            name = Path(plot).stem
            out += [f"![{PLOTS.get(name, (name,))[0]}]({plot})", ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(report: dict, out_dir: str | Path, metrics: dict[str, list[dict]] | None = None,
                 sections: Sequence[str] = ()) -> dict:
    """Write plots (from ``metrics``: ``{model: metrics.jsonl rows}``), ``report.md`` (with the extra
    markdown ``sections`` before the training curves), then ``report.json``.

    Sets ``report["plots"]`` to the plot paths relative to ``out_dir`` and returns the report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = plot_training_curves(metrics or {}, out_dir / "plots")
    report["plots"] = [path.relative_to(out_dir).as_posix() for path in written]
    atomic_write_text(out_dir / "report.md", render_markdown(report, sections))
    atomic_write_json(out_dir / "report.json", _finite(report))
    return report


def _finite(obj):
    """JSON has no inf/NaN: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj
