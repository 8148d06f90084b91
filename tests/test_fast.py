"""The fast path (distill/fast.py): compiled layers, loader workers, fused AdamW; none changes the loss."""
from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch

from conftest import REPO, metrics_rows
from distill import fast
from distill.artifacts import ModelInfo
from distill.models import build_model
from distill.recipe import ModelConfig, TrainingConfig
from distill.training import train

VOCAB, SEQ = 64, 16


def _run(tmp_path, name, **training):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="m", arch="llama", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), VOCAB, SEQ)
    rng = np.random.default_rng(0)
    data = [{"input_ids": rng.integers(3, VOCAB, SEQ).astype(np.int32)} for _ in range(24)]
    cfg = TrainingConfig(epochs=1, batch_size=4, lr=1e-2, scheduler="constant", save_every=0, log_every=1, **training)
    train(model, train_dataset=data, eval_dataset=data[:8], training_cfg=cfg, out_dir=tmp_path / name, info=ModelInfo(name=name))
    return model, [r["loss"] for r in metrics_rows(tmp_path / name) if r["split"] == "train"]


def test_settings_resolve_per_device(monkeypatch):
    assert fast.wants_compile("auto", "cuda") and not fast.wants_compile("auto", "cpu")
    assert fast.wants_compile(True, "cpu") and not fast.wants_compile(False, "cuda")
    assert fast.num_workers(None, "cpu") == 0 and fast.num_workers(3, "cpu") == 3 and fast.num_workers(0, "cuda") == 0
    monkeypatch.setattr(fast.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert fast.num_workers(None, "cuda") == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 processes share 16 CPUs: one worker each
    assert fast.num_workers(None, "cuda") == 1
    assert fast.fused_adamw("cuda") and not fast.fused_adamw("cpu")
    assert fast.cache_build_batch(32, "cuda") == 128 and fast.cache_build_batch(32, "cpu") == 32
    gpt2 = build_model(ModelConfig(name="g", arch="gpt2", hidden_size=32, num_layers=3, num_heads=2), VOCAB, SEQ)
    assert fast.layers_of(gpt2) == list(gpt2.transformer.h)


def test_a_compiler_that_fails_is_a_warning_and_the_same_eager_run(tmp_path, monkeypatch):
    _, eager = _run(tmp_path, "eager", compile=False)
    monkeypatch.setattr(fast, "compile_problem", lambda device_type: "InvalidCxxCompiler: no working C++ compiler found")
    with pytest.warns(UserWarning, match=r"fallback: training.compile=true but torch.compile does not work here \(InvalidCxxCompiler"):
        model, fallback = _run(tmp_path, "fallback", compile=True)
    assert fallback == eager
    assert not any(getattr(layer, "_compiled_call_impl", None) for layer in fast.layers_of(model))


def test_a_graph_that_fails_to_compile_in_the_first_step_reruns_it_eagerly(tmp_path, monkeypatch):
    # The probe passes, but the layers' own graph fails when the first step compiles it (as a Triton
    # or inductor error would): the step is undone and rerun eagerly, and the run equals an eager one.
    def failing_backend(graph, example_inputs):
        raise RuntimeError("triton: out of shared memory")

    _, eager = _run(tmp_path, "eager", compile=False)
    monkeypatch.setattr(fast, "compile_problem", lambda device_type: None)
    monkeypatch.setattr(fast, "_compile_layer", lambda layer: layer.compile(backend=failing_backend))
    with pytest.warns(UserWarning, match=r"late: torch.compile failed on the first step \(.*out of shared memory"):
        model, late = _run(tmp_path, "late", compile=True)
    assert late == eager
    assert not any(getattr(layer, "_compiled_call_impl", None) for layer in fast.layers_of(model))


def test_fused_adamw_steps_like_the_plain_one(tmp_path, monkeypatch):
    plain, plain_losses = _run(tmp_path, "plain")
    monkeypatch.setattr(fast, "fused_adamw", lambda device: True)  # the CUDA choice, on this CPU (torch has a CPU kernel)
    fused, fused_losses = _run(tmp_path, "fused")
    assert fused_losses == pytest.approx(plain_losses, rel=1e-5)
    for a, b in zip(plain.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_layers_train_like_eager_ones(tmp_path):
    if fast.compile_problem("cpu"):
        pytest.skip(f"torch.compile does not work on this machine: {fast.compile_problem('cpu')}")
    eager_model, eager = _run(tmp_path, "eager", compile=False)
    model, compiled = _run(tmp_path, "compiled", compile=True)
    assert all(getattr(layer, "_compiled_call_impl", None) for layer in fast.layers_of(model))
    assert compiled == pytest.approx(eager, rel=1e-4)  # fused kernels sum in another order
    # the saved folder is a plain transformers model (no compile wrapper in the weights' names)
    weights = json.loads((tmp_path / "compiled" / "model.safetensors.index.json").read_text())["weight_map"] if (
        tmp_path / "compiled" / "model.safetensors.index.json").exists() else None
    from safetensors.torch import load_file

    saved = weights or load_file(tmp_path / "compiled" / "model.safetensors")
    assert set(saved) == set(load_file(tmp_path / "eager" / "model.safetensors"))


class _Cache:  # stands for a TeacherLogitCache: targets by block index (tests/test_student.py runs the real one in workers)
    def __getitem__(self, index):
        return index.float() * 2


def test_cached_targets_travel_with_the_batch_and_pickle():
    collate = pickle.loads(pickle.dumps(fast.CachedTargets(_Cache())))
    batch = collate([{"input_ids": np.arange(4), "block_index": 7}, {"input_ids": np.arange(4), "block_index": 3}])
    assert batch["teacher_target"].tolist() == [14.0, 6.0] and batch["input_ids"].shape == (2, 4)
    assert "teacher_target" not in collate([{"input_ids": np.arange(4)}])  # validation blocks: no target


@pytest.mark.parametrize("override, message", [
    ("student.training.compile=maybe", "student.training.compile: 'maybe' is not one of auto | true | false"),
    ("student.training.num_workers=-1", "student.training.num_workers: -1 must be 0 (read in the training process) to 64"),
    ("student.training.num_workers=100000", "student.training.num_workers: 100000 must be 0"),
    ("student.training.num_workers=two", "student.training.num_workers: expected an integer"),
])
def test_bad_fast_path_keys_are_one_line_naming_the_key(override, message):
    from distill.errors import DistillError
    from distill.recipe import load_recipe

    with pytest.raises(DistillError, match=re.escape(message)):
        load_recipe(REPO / "recipes" / "tiny.yaml", [override])
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", ["student.training.compile=false", "student.training.num_workers=2"])
    assert recipe.student.training.compile is False and recipe.student.training.num_workers == 2
