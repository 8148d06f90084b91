"""The training loop: global token normalisation across accumulation, validation CE, checkpoints."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distill.artifacts import ModelInfo
from distill.checkpoints import latest_checkpoint
from distill.data import collate_blocks
from distill.models import build_model
from distill.recipe import ModelConfig, TrainingConfig
from distill.training import LossWindow, evaluate_loss, train

VOCAB, SEQ = 64, 16


def _dataset(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(3, VOCAB, SEQ).astype(np.int32)} for _ in range(n)]


def _masked_collate(items):
    # Mask a different-length prefix of each sequence: micro-batches then hold different token counts.
    batch = collate_blocks(items)
    for row, ids in enumerate(batch["input_ids"]):
        batch["labels"][row, : int(ids[0]) % 12] = -100
    return batch


def _model():
    torch.manual_seed(0)
    cfg = ModelConfig(name="m", arch="llama", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return build_model(cfg, VOCAB, SEQ)


def _train(tmp_path, name, batch_size, grad_accum, compute_loss=None):
    model = _model()
    cfg = TrainingConfig(
        epochs=1, max_steps=3, batch_size=batch_size, grad_accum=grad_accum, lr=1e-2, warmup_steps=0,
        scheduler="constant", max_grad_norm=None, save_every=0, log_every=1,
    )
    data = _dataset(24)
    metrics = train(
        model, train_dataset=data, eval_dataset=data[:8], training_cfg=cfg, out_dir=tmp_path / name,
        collate_fn=_masked_collate, compute_loss=compute_loss, info=ModelInfo(name=name),
    )
    return model, metrics


def test_one_batch_of_8_equals_two_accumulated_batches_of_4(tmp_path):
    whole, m1 = _train(tmp_path, "whole", 8, 1)
    split, m2 = _train(tmp_path, "split", 4, 2)
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float summation order only
    assert m1["train_tokens"] == m2["train_tokens"]
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    first = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows if r["split"] == "train"] == pytest.approx([r["loss"] for r in first if r["split"] == "train"], rel=1e-5)

    # The per-micro-batch mean (the bug this guards against) does depend on how the batch is cut.
    def naive(model, batch, window: LossWindow):
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss / window.num_micro_batches, {}

    naive_model, _ = _train(tmp_path, "naive", 4, 2, compute_loss=naive)
    gap = max((a - b).abs().max().item() for a, b in zip(whole.parameters(), naive_model.parameters()))
    assert gap > 1e-3, gap


def test_validation_is_token_weighted_ce(tmp_path):
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    model = _model().eval()
    data = _dataset(5, seed=1)
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(data, batch_size=2, collate_fn=_masked_collate))
    loss, ppl, tokens = evaluate_loss(model, loader, accelerator)
    batch = _masked_collate(data)
    with torch.no_grad():
        reference = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
    assert loss == pytest.approx(reference, rel=1e-5)
    assert ppl == pytest.approx(math.exp(reference), rel=1e-5)
    assert tokens == int((batch["labels"][:, 1:] != -100).sum())


def test_latest_checkpoint_ignores_half_written(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("step-5", "step-20", ".step-30.tmp", "other"):
        (root / name).mkdir(parents=True)
    assert latest_checkpoint(tmp_path) == root / "step-20"
    assert latest_checkpoint(tmp_path / "nothing") is None
