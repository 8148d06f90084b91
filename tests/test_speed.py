"""Speed reporting: model FLOPs per token, the peak table, MFU in metrics.jsonl, distill.json and the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill import speed
from distill.artifacts import ModelInfo
from distill.models import build_model
from distill.recipe import ModelConfig, TrainingConfig
from distill.report import summary_table
from distill.training import train

VOCAB, SEQ = 64, 16


def _llama(**kw):
    cfg = dict(name="m", arch="llama", hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, num_kv_heads=2)
    return build_model(ModelConfig(**{**cfg, **kw}), VOCAB, SEQ)


def test_flops_count_every_matrix_product_and_the_attention():
    # LLaMA with grouped-query attention: q and o are H x H, k and v H x (kv heads x head size),
    # the MLP three H x I matrices, the untied lm_head H x V; the embedding lookup is not a product.
    h, i, layers, kv = 32, 48, 2, 2 * (32 // 4)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i
    assert speed.matmul_params(_llama()) == layers * per_layer + h * VOCAB
    forward = 2 * (layers * per_layer + h * VOCAB) + 4 * layers * h * SEQ
    assert speed.forward_flops_per_token(_llama(), SEQ) == forward
    assert speed.training_flops_per_token(_llama(), SEQ) == 3 * forward
    assert speed.forward_flops_per_token(_llama(), 2 * SEQ) - forward == 4 * layers * h * SEQ  # attention grows with context

    # GPT-2 ties its lm_head to the embeddings, but the product still runs: it counts once.
    gpt2 = build_model(ModelConfig(name="g", arch="gpt2", hidden_size=32, num_layers=2, num_heads=2), VOCAB, SEQ)
    assert speed.matmul_params(gpt2) == 2 * (4 * 32 * 32 + 2 * 32 * 128) + 32 * VOCAB
    assert speed.matmul_params(gpt2) == sum(p.numel() for n, p in gpt2.named_parameters() if p.ndim == 2 and "wpe" not in n)
    # through wrappers (DDP's .module, torch.compile's ._orig_mod)
    wrapper = torch.nn.Module()
    wrapper.module = gpt2
    assert speed.forward_flops_per_token(wrapper, SEQ) == speed.forward_flops_per_token(gpt2, SEQ)


def test_peak_comes_from_the_table_or_the_override(monkeypatch):
    monkeypatch.delenv(speed.PEAK_ENV, raising=False)
    assert speed.peak_tflops("cpu") is None and speed.peak_tflops("cpu", "bf16") is None
    names = {"NVIDIA H100 80GB HBM3": (989.4, 67.0), "NVIDIA H100 PCIe": (756.0, 51.2), "NVIDIA H200": (989.4, 67.0),
             "NVIDIA A100-SXM4-80GB": (312.0, 19.5), "NVIDIA L4": (121.0, 30.3), "NVIDIA L40S": (362.1, 91.6)}
    for name, (half, single) in names.items():
        monkeypatch.setattr(speed, "device_name", lambda device, name=name: name)
        assert (speed.peak_tflops("cuda", "bf16"), speed.peak_tflops("cuda", "fp16"), speed.peak_tflops("cuda", "no")) == (half, half, single), name
    monkeypatch.setattr(speed, "device_name", lambda device: "Some Future GPU")
    assert speed.peak_tflops("cuda", "bf16") is None
    monkeypatch.setenv(speed.PEAK_ENV, "123.5")
    assert speed.peak_tflops("cuda", "bf16") == 123.5 and speed.peak_tflops("cpu") == 123.5
    for bad in ("-3", "fast", "0"):
        monkeypatch.setenv(speed.PEAK_ENV, bad)
        with pytest.raises(ValueError, match="DISTILL_PEAK_TFLOPS"):
            speed.peak_tflops("cpu")
    assert speed.mfu(1000.0, 1e9, 100.0, devices=2) == pytest.approx(1000 * 1e9 / 200e12)
    assert speed.mfu(1000.0, 1e9, None) is None


def _run(tmp_path, name):
    torch.manual_seed(0)
    model = _llama()
    rng = np.random.default_rng(0)
    data = [{"input_ids": rng.integers(3, VOCAB, SEQ).astype(np.int32)} for _ in range(32)]
    cfg = TrainingConfig(epochs=1, batch_size=4, lr=1e-3, scheduler="constant", save_every=0, log_every=2)
    metrics = train(model, train_dataset=data, eval_dataset=data[:8], training_cfg=cfg, out_dir=tmp_path / name, info=ModelInfo(name=name))
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return model, metrics, [r for r in rows if r["split"] == "train"]


def test_every_train_row_and_the_final_metrics_report_speed_and_mfu(tmp_path, monkeypatch):
    monkeypatch.delenv(speed.PEAK_ENV, raising=False)
    model, metrics, rows = _run(tmp_path, "cpu")
    flops = speed.training_flops_per_token(model, SEQ)
    assert metrics["model_flops_per_token"] == round(flops)
    # no peak on a CPU: tokens/s and model TFLOP/s, no MFU
    assert len(rows) == 4 and all(r["tokens_per_s"] > 0 and r["tflops"] > 0 and "mfu" not in r for r in rows)
    assert "mfu" not in metrics and metrics["tokens_per_s"] > 0
    # tokens/s counts targets (SEQ - 1 per block), TFLOP/s every position the model runs on
    for r in rows:
        assert r["tflops"] == pytest.approx(r["tokens_per_s"] * SEQ / (SEQ - 1) * flops / 1e12, rel=2e-3, abs=1e-4)

    monkeypatch.setenv(speed.PEAK_ENV, "0.5")
    _, metrics, rows = _run(tmp_path, "peak")
    assert all(r["mfu"] == pytest.approx(r["tflops"] / 0.5, rel=2e-3, abs=2e-4) for r in rows)
    assert 0 < metrics["mfu"] < 1
    table = summary_table({"splits": {"val": {}}, "models": {"peak": {"role": "teacher", "training": metrics, "perplexity": {"val": {"ppl": 9.0}}}}})
    assert "| model | role | arch | params | train steps | train tokens/s | MFU | val ppl |" in table
    assert f"| {100 * metrics['mfu']:.1f}% |" in table


def test_a_bad_peak_is_one_line_before_anything_trains(tiny_recipe, capsys):
    from distill.teacher import main

    assert main([str(tiny_recipe), "--peak-tflops", "-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--peak-tflops -5" in err and "positive" in err
