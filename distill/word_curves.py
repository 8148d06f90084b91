"""Learning curves in words seen: each model's ``words/<count>/`` folders scored, plotted and tabled.

A model trained with ``training.save_at_words`` holds whole model folders saved at those counts of
train words seen (:mod:`distill.words_seen`). :func:`add_curves`, called by the evaluation, scores
each one (perplexity on the report's first split, BLiMP accuracy when minimal pairs are given; no
facts and no generated text, to keep it cheap), adds the finished model as the last point at its
total words seen, and

* puts ``report["curves"]`` into the report: ``{"split", "plots", "models": {model: [point, ...]}}``,
  a point ``{"label", "words_seen", "step", "path", "ppl", "blimp"}`` (``label``: the folder's name,
  ``final`` for the model itself);
* writes ``plots/words_<split>_ppl.png`` and ``plots/words_blimp.png``: each metric against words seen
  (log axis), one line per model (an old figure without data now is removed);
* returns the "Learning curves in words seen" section of ``report.md``.

Models without ``words/`` folders have no curve.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from distill.artifacts import WORDS_DIR, is_finished, read_info
from distill.atomic import atomic_write_bytes
from distill.report import _render_png, _table

SECTION = "## Learning curves in words seen"
BLIMP_PLOT = "words_blimp"


def word_folders(model_dir: str | Path) -> list[Path]:
    """The finished ``words/<count>/`` folders of a model folder, by words seen."""
    root = Path(model_dir) / WORDS_DIR
    if not root.is_dir():
        return []
    found = [(read_info(folder), folder) for folder in root.iterdir() if folder.is_dir() and is_finished(folder)]
    return [folder for info, folder in sorted(found, key=lambda pair: (pair[0].words_seen or 0, pair[1].name))]


def _point(label: str, path: Path, words, step, entry: dict, split: str | None) -> dict[str, Any]:
    """One point of a curve from a model's report entry (``perplexity``, ``blimp``)."""
    ppl = (((entry.get("perplexity") or {}).get(split) or {}).get("ppl")) if split else None
    blimp = ((entry.get("blimp") or {}).get("overall") or {}).get("accuracy")
    return {"label": label, "words_seen": words, "step": step, "path": str(path), "ppl": ppl, "blimp": blimp}


def curve_points(folder: Path, entry: dict, score: Callable[[Path], dict], split: str | None) -> list[dict[str, Any]]:
    """A model's curve: each ``words/`` folder scored by ``score`` (folder -> report entry), then the
    finished model (its report ``entry``) at its total words seen, when its ``distill.json`` records it."""
    points = []
    for path in word_folders(folder):
        info = read_info(path)
        points.append(_point(path.name, path, info.words_seen, info.step, score(path), split))
    training = entry.get("training") or {}
    if points and training.get("words_seen") is not None:
        points.append(_point("final", folder, training["words_seen"], training.get("steps"), entry, split))
    return points


def add_curves(report: dict, folders: dict[str, Path], score: Callable[[Path], dict], out_dir: str | Path) -> list[str]:
    """Score every model's ``words/`` folders, put the curves into ``report["curves"]``, write their plots
    into ``out_dir/plots``; return report.md's section (``[]`` when no model has any)."""
    split = next(iter(report.get("splits") or {}), None)
    models = {}
    for name, folder in folders.items():
        points = curve_points(Path(folder), (report.get("models") or {}).get(name) or {}, score, split)
        if points:
            models[name] = points
    plots = write_plots(models, split, Path(out_dir))
    if not models:
        report.pop("curves", None)
        return []
    report["curves"] = {"split": split, "plots": plots, "models": models}
    return [curves_section(report["curves"])]


def _series(models: dict[str, list[dict]], key: str) -> dict[str, tuple[list[float], list[float]]]:
    series = {}
    for name, points in models.items():
        kept = [(p["words_seen"], p[key]) for p in points if p.get("words_seen") and isinstance(p.get(key), (int, float))]
        if kept:
            series[name] = ([float(x) for x, _ in kept], [float(y) for _, y in kept])
    return series


def write_plots(models: dict[str, list[dict]], split: str | None, out_dir: Path) -> list[str]:
    """``plots/words_<split>_ppl.png`` and ``plots/words_blimp.png`` (paths relative to ``out_dir``);
    a words plot with no data is removed."""
    plots_dir = out_dir / "plots"
    wanted = {f"words_{split}_ppl": (f"{split} perplexity (CE only)", "ppl", True)} if split else {}
    wanted[BLIMP_PLOT] = ("BLiMP accuracy", "blimp", False)
    written = []
    for stale in plots_dir.glob("words_*.png") if plots_dir.is_dir() else []:
        if stale.stem not in wanted:
            stale.unlink(missing_ok=True)
    for stem, (title, key, log_y) in wanted.items():
        path = plots_dir / f"{stem}.png"
        series = _series(models, key)
        if not series:
            path.unlink(missing_ok=True)
            continue
        atomic_write_bytes(path, _render_png(f"{title} by train words seen", "train words seen", series, log_y=log_y, log_x=True))
        written.append(path.relative_to(out_dir).as_posix())
    return written


def curves_section(curves: dict) -> str:
    """report.md's section: the plots, then one row per point."""
    split = curves.get("split")
    out = [SECTION, "",
           "Each model at the counts of train words seen in its `training.save_at_words` (the `words/<count>/` folders of "
           "its model folder) and, last, at the end of training (`final`). Words seen count the train split's words once "
           "per epoch, in step with the tokens trained on (`distill/words_seen.py`)"
           + (f"; perplexity on the {split} split, CE only, as above." if split else "."), ""]
    for plot in curves.get("plots") or []:
        what = "BLiMP accuracy" if Path(plot).stem == BLIMP_PLOT else f"{split} perplexity"
        out += [f"![{what} by train words seen]({plot})", ""]
    header = ["model", "folder", "words seen", "step"] + ([f"{split} ppl"] if split else []) + ["BLiMP"]
    rows = []
    for name, points in (curves.get("models") or {}).items():
        for p in points:
            blimp = p.get("blimp")
            row = [name, p["label"], f"{p['words_seen']:,}" if isinstance(p.get("words_seen"), int) else "–",
                   str(p.get("step") if p.get("step") is not None else "–")]
            row += [f"{p['ppl']:.2f}" if isinstance(p.get("ppl"), (int, float)) else "–"] if split else []
            rows.append(row + [f"{100 * blimp:.1f}%" if isinstance(blimp, (int, float)) else "–"])
    out += [_table(header, ["l", "l", "r", "r"] + ["r"] * (len(header) - 4), rows), ""]
    return "\n".join(out)
