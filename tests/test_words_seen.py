"""training.save_at_words: model folders at counts of words seen, kept across resume, and their learning curves."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from conftest import ASSETS, Crash, crash_at, write_splits
from distill.artifacts import ModelInfo, model_stale, write_info
from distill.data import build_blocks
from distill.evaluate import evaluate_models
from distill.models import build_model
from distill.recipe import ModelConfig, TrainingConfig
from distill.training import train
from distill.words_seen import split_words, train_words_of

SEQ, BLOCKS, BATCH, WORDS = 32, 48, 8, 1000  # 6 steps an epoch; WORDS: the train words of one epoch, as passed to train()
THRESHOLDS = [250, 500, 1000, 1400, 5000]  # 500 exactly at step 3, 1000 at the epoch's end, 5000 past the run's 2000


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_tokenizer_dir):
    from distill.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("words")
    splits = write_splits(root / "corpus")
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    blocks = build_blocks(splits / "train.txt", tokenizer, SEQ, root / "tokens")
    val = build_blocks(splits / "val.txt", tokenizer, SEQ, root / "tokens")
    return {"root": root, "splits": splits, "tokenizer": tokenizer, "blocks": blocks, "val": val}


def run(data, out, *, resume=False, compute_loss=None):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="m", arch="llama", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), 400, SEQ)
    cfg = TrainingConfig(epochs=2, batch_size=BATCH, lr=1e-2, warmup_steps=2, save_every=2, log_every=1, save_at_words=THRESHOLDS)
    train_data = [{"input_ids": data["blocks"][i]["input_ids"]} for i in range(BLOCKS)]
    info = ModelInfo(name="m", role="teacher", recipe={"training": cfg.to_dict()})
    return train(model, train_dataset=train_data, eval_dataset=data["val"], training_cfg=cfg, out_dir=out, tokenizer=data["tokenizer"],
                 info=info, resume=resume, compute_loss=compute_loss, train_words=WORDS)


@pytest.fixture(scope="module")
def reference(data):
    out = data["root"] / "reference"
    metrics = run(data, out)
    return out, metrics


def weights_sha(folder) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def infos(out) -> dict[str, dict]:
    return {f.name: json.loads((f / "distill.json").read_text()) for f in sorted((out / "words").iterdir())}


def test_blocks_of_a_split_file_know_its_words(data):
    words = split_words(data["splits"] / "train.txt")
    assert words == json.loads((data["splits"] / "manifest.json").read_text())["train"]["words"]  # as the corpus counts them
    assert train_words_of(data["blocks"]) == words and train_words_of(data["splits"] / "train.txt") == words
    assert train_words_of([{"input_ids": [1, 2]}]) is None  # blocks made in memory: unknown


def test_folders_at_the_steps_the_words_pass_each_count(data, reference):
    from transformers import AutoModelForCausalLM

    out, metrics = reference
    epoch_tokens = BLOCKS * (SEQ - 1)
    per_step = BATCH * (SEQ - 1) * WORDS / epoch_tokens  # words of one step
    seen = [step * BATCH * (SEQ - 1) * WORDS // epoch_tokens for step in range(1, 13)]  # after steps 1..12
    expected = {t: next(i + 1 for i, words in enumerate(seen) if words >= t) for t in THRESHOLDS if t <= seen[-1]}
    assert expected == {250: 2, 500: 3, 1000: 6, 1400: 9}
    found = infos(out)
    assert list(found) == ["1.4k", "1k", "250", "500"]  # 5000 is never reached
    assert metrics["words_seen"] == 2 * WORDS and json.loads((out / "distill.json").read_text())["metrics"]["words_seen"] == 2 * WORDS
    for label, threshold in {"250": 250, "500": 500, "1k": 1000, "1.4k": 1400}.items():
        info = found[label]
        assert info["role"] == "teacher" and info["step"] == expected[threshold] == info["metrics"]["steps"]
        assert threshold <= info["words_seen"] < threshold + per_step and info["metrics"]["words_seen"] == info["words_seen"]
        assert "train_loss" in info["metrics"] and ("val_loss" in info["metrics"]) == (threshold > 1000)  # val only after epoch 1
        model = AutoModelForCausalLM.from_pretrained(out / "words" / label)
        assert model.config.vocab_size == 400 and (out / "words" / label / "tokenizer.json").is_file()
    # save_at_words is bookkeeping: changing it leaves the finished model current.
    changed = ModelInfo(name="m", role="teacher", recipe={"training": {**found["1k"]["recipe"]["training"], "save_at_words": [1]}})
    assert model_stale(out, changed) is None


def test_a_resumed_run_keeps_its_folders_and_makes_the_same_ones(data, reference, capsys):
    out = data["root"] / "resumed"
    stale = out / "words" / "9k"  # an older run's folder: a fresh start removes it
    stale.mkdir(parents=True)
    write_info(stale, ModelInfo(name="old"))
    with pytest.raises(Crash):
        run(data, out, compute_loss=crash_at(8))  # checkpoints step-2 and step-4 (step 6 ends the epoch)
    assert sorted(p.name for p in (out / "words").iterdir()) == ["1k", "250", "500"]
    kept = (out / "words" / "250" / "model.safetensors").stat().st_ino
    capsys.readouterr()
    run(data, out, resume=True)
    err = capsys.readouterr().err
    assert "250, 500 passed before the checkpoint" in err and "1k, 1.4k to be saved" in err and "5k never reached" in err
    assert (out / "words" / "250" / "model.safetensors").stat().st_ino == kept  # not saved again
    ref = infos(reference[0])
    assert {k: (v["step"], v["words_seen"]) for k, v in infos(out).items()} == {k: (v["step"], v["words_seen"]) for k, v in ref.items()}
    for label in ref:
        assert weights_sha(out / "words" / label) == weights_sha(reference[0] / "words" / label), label


def test_evaluate_plots_the_curves_in_words_seen(data, reference, tmp_path):
    out = reference[0]
    folder = tmp_path / "m"  # a copy: the report must not depend on where the model was trained
    shutil.copytree(out, folder)
    report = evaluate_models({"m": folder}, splits={"val": data["splits"] / "val.txt"}, blimp_dir=ASSETS / "blimp",
                             out_dir=tmp_path / "report", device="cpu")
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    curves = saved["curves"]
    assert curves == json.loads(json.dumps(report["curves"]))
    points = curves["models"]["m"]
    assert [p["label"] for p in points] == ["250", "500", "1k", "1.4k", "final"]
    assert [p["words_seen"] for p in points] == sorted(p["words_seen"] for p in points) and points[-1]["words_seen"] == 2 * WORDS
    assert all(p["ppl"] > 1 and 0 <= p["blimp"] <= 1 for p in points)
    assert points[-1]["ppl"] == saved["models"]["m"]["perplexity"]["val"]["ppl"]
    assert curves["plots"] == ["plots/words_val_ppl.png", "plots/words_blimp.png"]
    assert all((tmp_path / "report" / plot).read_bytes().startswith(b"\x89PNG") for plot in curves["plots"])
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Learning curves in words seen" in markdown and "| m | 1.4k | " in markdown and "(plots/words_blimp.png)" in markdown
