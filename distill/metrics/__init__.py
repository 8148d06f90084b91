"""Our metrics as Hugging Face ``evaluate`` modules, shipped inside the package and loaded by path.

    from distill import metrics
    accuracy = metrics.load("minimal_pair_accuracy")
    accuracy.compute(good_logprobs=[-10.0, -12.5], bad_logprobs=[-11.0, -12.0], groups=["a", "b"])

Each module is a folder ``NAME/NAME.py`` holding one ``evaluate.Metric`` (``minimal_pair_accuracy``:
good/bad sentence log-probabilities -> accuracy, per group too; ``block_perplexity``: per-block NLL
sums and token counts -> token-weighted loss and perplexity). ``evaluate.load(folder)`` works on
them directly and needs no network: a local script is copied into the modules cache
(``HF_MODULES_CACHE``) and imported from there; nothing is fetched from the Hub.
"""
from __future__ import annotations

from pathlib import Path

from distill.errors import DistillError

METRICS_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    """The shipped metric modules."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def path(name: str) -> Path:
    """The folder of a shipped metric module, for ``evaluate.load``."""
    folder = METRICS_DIR / name
    if not (folder / f"{name}.py").is_file():
        raise DistillError(f"{name}: no such metric in distill; pick one of {', '.join(names())}")
    return folder


def load(name: str, **kwargs):
    """``evaluate.load`` of a shipped metric; results kept in memory (no cache files) unless ``keep_in_memory=False``."""
    import evaluate  # pulls in datasets: imported only when a metric is used

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(path(name)), **kwargs)
