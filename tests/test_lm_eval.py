"""A model folder written by distill works in EleutherAI's lm-evaluation-harness, and the harness
agrees with ``distill.evaluate`` on BLiMP-format minimal pairs. CI runs it: lm-eval is in the
``dev`` extra that ``.ci/run`` installs (skipped only where lm-eval is missing). Nothing is
downloaded: the harness runs offline and reads the pairs in tests/assets/blimp through a task file
shaped like its own ``blimp`` tasks."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ASSETS, REPO

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow  # runs the harness in a subprocess

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {path}
test_split: train
output_type: multiple_choice
doc_to_text: ""
doc_to_target: 0
doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
num_fewshot: 0
metric_list:
  - metric: acc
    higher_is_better: true
"""


def test_lm_eval_scores_a_distill_folder_like_distill_evaluate(tmp_path, tiny_tokenizer):
    import torch

    from distill.evaluate import score_minimal_pairs
    from distill.models import build_model
    from distill.recipe import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(name="m", arch="llama", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    model = build_model(cfg, 400, 32).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    files = sorted((ASSETS / "blimp").glob("*.jsonl"))
    names = [f"local_{path.stem}" for path in files]
    for name, path in zip(names, files):
        (tasks / f"{name}.yaml").write_text(TASK.format(name=name, path=path), encoding="utf-8")
    out = tmp_path / "results"
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={folder},tokenizer={folder},dtype=float32",
        "--tasks", ",".join(names), "--include_path", str(tasks), "--device", "cpu", "--batch_size", "4", "--output_path", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for path in out.rglob("results_*.json"):
        results.update(json.loads(path.read_text())["results"])
    ours = score_minimal_pairs(model, tiny_tokenizer, ASSETS / "blimp")["per_file"]
    for name, path in zip(names, files):
        harness = results[name]["acc,none"]
        assert harness == pytest.approx(ours[path.stem]["accuracy"]), (name, harness, ours[path.stem])
