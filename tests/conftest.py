"""Shared fixtures: a tiny corpus split folder, a tiny tokenizer and a tiny recipe.

The split folder follows the corpus contract (``<s> TEXT </s>\\n`` records, ``manifest.json``) and is
built here from ``tests/assets/teacher/articles.jsonl``, so these tests do not depend on
``distill.corpus``.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ASSETS = Path(__file__).parent / "assets"
REPO = Path(__file__).resolve().parent.parent

# metrics.jsonl rows of a teacher and a student (train rows every 10 steps, two validations in
# epoch 1, one without ppl in epoch 2), for report and evaluate tests that need no real training.
TEACHER_ROWS = [
    {"step": 10, "epoch": 1, "split": "train", "loss": 6.0, "lr": 1e-3},
    {"step": 20, "epoch": 1, "split": "train", "loss": 5.0, "lr": 1e-3},
    {"step": 20, "epoch": 1, "split": "val", "loss": 5.3, "ppl": 200.3},
]
STUDENT_ROWS = [
    {"step": 10, "epoch": 1, "split": "train", "loss": 4.0, "ce": 6.2, "kl": 1.8, "lr": 1e-3},
    {"step": 20, "epoch": 1, "split": "train", "loss": 3.6, "ce": 5.5, "kl": 1.7, "lr": 1e-3},
    {"step": 15, "epoch": 1, "split": "val", "loss": 5.8, "ppl": 330.0},
    {"step": 20, "epoch": 1, "split": "val", "loss": 5.6, "ppl": 270.4},
    {"step": 40, "epoch": 2, "split": "val", "loss": 5.2},
]

# Two CPU cores are shared by everything: keep torch to one thread in tests and their subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def subprocess_env() -> dict:
    """Environment for a stage run as a subprocess: one thread, the CPU, this checkout importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for accelerate's main process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Crash(Exception):
    """Stands for a run killed mid-training (raised by :func:`crash_at`'s loss)."""


def crash_at(step: int):
    """A ``compute_loss`` for :func:`distill.training.train` that raises :class:`Crash` at optimizer step ``step``."""
    from distill.training import causal_lm_loss

    def compute_loss(model, batch, window):
        if window.step == step:
            raise Crash
        return causal_lm_loss(model, batch, window)

    return compute_loss


def metrics_rows(folder: Path) -> list[dict]:
    """The rows of a model folder's metrics.jsonl."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def steps_per_epoch(recipe_path: Path, batch_size: int, processes: int = 1) -> int:
    """Optimizer steps in one epoch over the recipe's train split: its blocks (counted by
    ``distill.data.load_blocks`` with the recipe's trained tokenizer) over the global batch, rounded up."""
    from distill.data import load_blocks
    from distill.recipe import load_recipe
    from distill.tokenizer import load_tokenizer

    recipe = load_recipe(recipe_path)
    blocks = len(load_blocks(recipe, "train", load_tokenizer(recipe.paths.tokenizer)))
    return math.ceil(blocks / (batch_size * processes))


def interrupt_at_checkpoint(cmd: list[str], checkpoint: Path, timeout: float = 120) -> str:
    """Run a training command, send SIGTERM once ``checkpoint`` exists, and return its stderr
    after checking that it stopped with exit code 143."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not checkpoint.is_dir():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-3000:]
    return stderr


def load_articles() -> list[str]:
    with open(ASSETS / "teacher" / "articles.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def write_split_file(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"<s> {text} </s>\n" for text in texts), encoding="utf-8")
    return path


def write_splits(folder: Path, articles: list[str] | None = None) -> Path:
    """train = all but the last 4 articles, val = 2, test = 2; plus a small manifest."""
    articles = articles if articles is not None else load_articles()
    parts = {"train": articles[:-4], "val": articles[-4:-2], "test": articles[-2:]}
    for name, texts in parts.items():
        write_split_file(folder / f"{name}.txt", texts)
    manifest = {name: {"articles": len(texts), "words": sum(len(t.split()) for t in texts)} for name, texts in parts.items()}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return folder


def tiny_recipe_dict(output_dir: Path) -> dict:
    """A recipe small enough for a test: vocab 400, seq 32, 2-layer width-32 teachers."""
    training = {
        "epochs": 1,
        "batch_size": 8,
        "grad_accum": 1,
        "lr": 3.0e-3,
        "weight_decay": 0.01,
        "warmup_steps": 4,
        "scheduler": "cosine",
        "seed": 0,
        "save_every": 1000,
        "log_every": 5,
    }
    teacher = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "training": training}
    return {
        "name": "test-tiny",
        "output_dir": str(output_dir),
        "corpus": {"source": str(ASSETS / "teacher"), "train_words": 5000, "val_words": 500, "test_words": 500},
        "tokenizer": {"vocab_size": 400, "min_frequency": 2},
        "data": {"seq_len": 32},
        "teachers": [
            {"name": "llama", "arch": "llama", "intermediate_size": 64, **teacher},
            {"name": "gpt2", "arch": "gpt2", **teacher, "training": dict(training)},
        ],
        "student": {"arch": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "training": dict(training)},
        "generate": {"prompts": ["London was"], "max_new_tokens": 8},
        "evaluate": {"splits": ["val"]},
    }


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def articles() -> list[str]:
    return load_articles()


@pytest.fixture
def split_dir(tmp_path) -> Path:
    """A corpus split folder (train/val/test/manifest) in the contract format."""
    return write_splits(tmp_path / "corpus")


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    """A tiny recipe YAML whose output_dir already holds the corpus splits."""
    out = tmp_path / "out"
    write_splits(out / "corpus")
    return write_recipe(tmp_path / "tiny.yaml", tiny_recipe_dict(out))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A 400-token BPE tokenizer trained once per session on the asset train split."""
    from distill.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tokenizer")
    splits = write_splits(root / "corpus")
    train_tokenizer(splits / "train.txt", 400, 2, root / "tokenizer")
    return root / "tokenizer"


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir):
    from distill.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)
