"""``python -m distill run``: every stage on a micro recipe, then a rerun that skips them all."""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from conftest import ASSETS, REPO, write_recipe
from distill.__main__ import main

SAMPLE = REPO / "corpora" / "britannica-1911-sample"
STAGES = ["corpus", "tokenizer", "teachers", "student", "evaluate", "samples"]
MODELS = ["llama", "gpt2", "student", "baseline"]


def copy_articles(out: Path, words: int = 30_000) -> Path:
    """A slice of the shipped sample: mid-sized articles, in name order, until ``words`` words."""
    out.mkdir()
    total = 0
    for path in sorted(SAMPLE.glob("*.txt")):
        count = len(path.read_text(encoding="utf-8").split())
        if 300 <= count <= 1500:
            shutil.copy(path, out / path.name)
            total += count
            if total >= words:
                return out
    raise AssertionError(f"the shipped sample has fewer than {words} words in mid-sized articles")


def micro_recipe(tmp_path: Path) -> dict:
    training = {"epochs": 1, "max_steps": 8, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "save_every": 1000, "log_every": 2, "seed": 0}
    model = {"hidden_size": 32, "num_layers": 2, "num_heads": 2}
    return {
        "name": "micro",
        "output_dir": str(tmp_path / "run"),
        "corpus": {"source": str(copy_articles(tmp_path / "articles")), "train_words": 20_000, "val_words": 3000,
                   "test_words": 3000, "seed": 0, "facts": str(ASSETS / "facts.jsonl"), "fact_repeats": 3},
        "tokenizer": {"vocab_size": 400, "min_frequency": 2},
        "data": {"seq_len": 32},
        "teachers": [
            {"name": "llama", "arch": "llama", "intermediate_size": 64, **model, "training": dict(training)},
            {"name": "gpt2", "arch": "gpt2", **model, "training": dict(training)},
        ],
        "student": {"arch": "llama", "intermediate_size": 64, **model, "chunk_size": 256, "training": dict(training)},
        "generate": {"prompts": ["London was", "The river", "ASTRONOMY is"], "max_new_tokens": 12},
        "evaluate": {"splits": ["val", "test"], "blimp_dir": str(ASSETS / "blimp")},
    }


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "distill", "run", str(recipe), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def progress(stdout: str) -> dict[str, str]:
    """``{stage: what its last progress line says}``."""
    lines = re.findall(r"^\[(\d)/6\] (\w+) \.\.\. (.*)$", stdout, flags=re.M)
    assert [int(n) for n, _, _ in lines] == sorted(int(n) for n, _, _ in lines)
    return {stage: text for _, stage, text in lines}


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, path
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100, path
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29]), path  # the header chunk is intact
    assert data[-8:-4] == b"IEND", path


@pytest.mark.slow
def test_run_builds_every_stage_then_skips_them_all(tmp_path):
    from transformers import AutoTokenizer

    recipe = write_recipe(tmp_path / "micro.yaml", micro_recipe(tmp_path))
    root = tmp_path / "run"
    first = run(recipe)
    lines = progress(first.stdout)
    assert list(lines) == STAGES and all(text.startswith("done in ") for text in lines.values()), first.stdout

    # corpus: three splits and the manifest, within the budgets, with the facts injected
    manifest = json.loads((root / "corpus" / "manifest.json").read_text(encoding="utf-8"))
    for split, budget in (("train", 20_000), ("val", 3000), ("test", 3000)):
        assert (root / "corpus" / f"{split}.txt").stat().st_size > 1000
        assert 0 < manifest[split]["words"] <= budget
    assert manifest["facts"]["repeats"] == 3
    # tokenizer: what AutoTokenizer loads, with the special ids every stage relies on
    tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2) and len(tokenizer) <= 400
    # models: finished folders
    folders = {"llama": root / "teachers" / "llama", "gpt2": root / "teachers" / "gpt2", "student": root / "student", "baseline": root / "baseline"}
    for name, folder in folders.items():
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file(), name
        info = json.loads((folder / "distill.json").read_text(encoding="utf-8"))
        assert info["role"] == {"llama": "teacher", "gpt2": "teacher"}.get(name, name)
        assert not (folder / "checkpoints").exists()
    # evaluate: every model's perplexity in report.json, a table in report.md, real PNG plots
    report = json.loads((root / "report" / "report.json").read_text(encoding="utf-8"))
    assert sorted(report["models"]) == sorted(MODELS)
    for name, entry in report["models"].items():
        assert 1 < entry["perplexity"]["val"]["ppl"] < 1000 and entry["perplexity"]["test"]["ppl"] > 1, name
        assert entry["blimp"]["overall"]["n"] > 0 and entry["facts"]["n"] == 3
    # model cards: every folder's README.md carries its distill.json metrics and, after evaluate, its numbers
    for name, folder in folders.items():
        card = ModelCard.load(folder / "README.md")
        assert card.data.training_metrics == json.loads((folder / "distill.json").read_text(encoding="utf-8"))["metrics"], name
        scores = {(r.metric_type, r.dataset_split): r.metric_value for r in card.data.eval_results}
        entry = report["models"][name]
        assert scores == {("perplexity", "val"): entry["perplexity"]["val"]["ppl"], ("perplexity", "test"): entry["perplexity"]["test"]["ppl"],
                          ("accuracy", None): entry["blimp"]["overall"]["accuracy"]}, name
        assert "## Sample generations" in card.text, name
        assert_png(folder / "training_curve.png")
    table = (root / "report" / "report.md").read_text(encoding="utf-8")
    assert "| model |" in table and all(f"| {name} |" in table for name in MODELS)
    assert report["plots"] and len(list((root / "report" / "plots").glob("*.png"))) == len(report["plots"])
    for plot in report["plots"]:
        assert_png(root / "report" / plot)
    # samples: three, one per prompt, printed and written
    samples = (root / "report" / "samples.md").read_text(encoding="utf-8")
    assert len(re.findall(r"^## Sample \d$", samples, flags=re.M)) == 3
    for prompt in ("London was", "The river", "ASTRONOMY is"):
        assert f"\n{prompt}" in samples and f"{prompt}" in first.stdout
    assert first.stdout.count("--- sample ") == 3

    # A rerun skips every stage and writes nothing.
    before = snapshot(root)
    time.sleep(0.01)
    again = run(recipe)
    assert progress(again.stdout) == {stage: "skipped (already done)" for stage in STAGES}, again.stdout
    assert snapshot(root) == before

    # Other sampling settings redo the samples only.
    changed = run(recipe, "generate.max_new_tokens=6")
    lines = progress(changed.stdout)
    assert [stage for stage, text in lines.items() if text != "skipped (already done)"] == ["samples"], changed.stdout
    after = snapshot(root)
    assert {name for name in after if after[name] != before.get(name)} == {"report/samples.md", "run.json"}


def test_help_and_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "distill.student" in out and "distill.serve" in out
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.yaml" in err and len(err.strip().splitlines()) == 1
    assert main(["run", str(tmp_path / "nope.yaml"), "--from", "nowhere"]) == 2
    assert "--from" in capsys.readouterr().err


def test_a_second_run_on_the_same_folder_stops_at_once(tmp_path, capsys):
    import fcntl

    recipe = write_recipe(tmp_path / "micro.yaml", micro_recipe(tmp_path))
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / ".run.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run in progress holds it
        assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run'}: another run is working in this folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".run.lock"]  # nothing started
