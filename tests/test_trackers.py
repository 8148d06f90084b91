"""Experiment trackers through Accelerate: the logged names, one run per model, and ``log_with`` checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import metrics_rows
from distill.artifacts import ModelInfo
from distill.distributed import RUNS, installed_trackers, make_accelerator, tracker_names
from distill.errors import DistillError
from distill.models import build_model
from distill.recipe import ModelConfig, TrainingConfig, load_recipe
from distill.training import train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

VOCAB, SEQ = 64, 16


def _train(out_dir, name: str, log_with="tensorboard", **training) -> dict:
    torch.manual_seed(0)
    section = ModelConfig(name=name, arch="llama", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          training=TrainingConfig(max_steps=2, batch_size=4, lr=1e-2, save_every=0, log_every=1,
                                                  log_with=log_with, **training))
    rng = np.random.default_rng(0)
    data = [{"input_ids": rng.integers(3, VOCAB, SEQ).astype(np.int32)} for _ in range(12)]
    return train(build_model(section, VOCAB, SEQ), train_dataset=data, eval_dataset=data[:4], training_cfg=section.training,
                 out_dir=out_dir, info=ModelInfo(name=name, role="teacher", recipe=section.to_dict()))


def _events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def test_tensorboard_logs_the_stable_names_with_metrics_jsonl_values(tmp_path):
    _train(tmp_path / "llama", "llama", max_grad_norm=1.0)
    events = _events(tmp_path / "llama" / RUNS / "llama")  # in the finished folder: complete
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/tokens", "val/loss", "val/ppl"} <= tags
    rows = metrics_rows(tmp_path / "llama")
    for split, key in (("train", "loss"), ("train", "lr"), ("train", "grad_norm"), ("val", "loss"), ("val", "ppl")):
        logged = {e.step: e.value for e in events.Scalars(f"{split}/{key}")}
        expected = {r["step"]: r[key] for r in rows if r["split"] == split}
        assert logged.keys() == expected.keys() and expected, (split, key)
        for step, value in expected.items():
            assert logged[step] == pytest.approx(value, rel=1e-6)  # tensorboard stores float32
    assert [r["step"] for r in rows if r["split"] == "val"] == [2]  # the last step, in the copied events too
    assert all(r["tokens_per_s"] > 0 for r in rows if r["split"] == "train")


def test_models_in_one_process_each_get_their_own_run(tmp_path, monkeypatch):
    from accelerate.tracking import TensorBoardTracker

    finished = []
    original = TensorBoardTracker.finish
    monkeypatch.setattr(TensorBoardTracker, "finish", lambda self: (finished.append(self.run_name), original(self)))
    for name in ("llama", "student"):
        _train(tmp_path / name, name)
    assert finished == ["llama", "student"]
    for name in ("llama", "student"):
        assert [p.name for p in (tmp_path / name / RUNS).iterdir()] == [name]
        events = _events(tmp_path / name / RUNS / name)
        assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    # A fresh start replaces the old run's files, as it does metrics.jsonl.
    _train(tmp_path / "llama", "llama")
    assert len(list((tmp_path / "llama" / RUNS / "llama").glob("events.out.tfevents.*"))) == 1


def test_missing_tracker_package_warns_and_trains_without_it(tmp_path):
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    available = {str(t) for t in get_available_trackers()}
    missing = next((str(t) for t in LoggerType if str(t) not in available | {"all"}), None)
    if missing is None:
        pytest.skip("every tracker Accelerate knows is installed")
    with pytest.warns(UserWarning, match=f"pip install {missing}"):
        assert installed_trackers(["tensorboard", missing]) == ["tensorboard"]
    with pytest.warns(UserWarning, match=f"pip install {missing}"):
        accelerator = make_accelerator(TrainingConfig(log_with=missing), tmp_path)
    assert not accelerator.log_with


def test_unknown_tracker_is_refused_with_the_valid_ones(tiny_recipe):
    with pytest.raises(DistillError) as err:
        load_recipe(tiny_recipe, ["teachers.0.training.log_with=[tensorboard, wandbb]"])
    message = str(err.value)
    assert "teachers[0].training.log_with: 'wandbb'" in message and "did you mean 'wandb'?" in message
    assert all(name in message for name in tracker_names())
    recipe = load_recipe(tiny_recipe, ["student.training.log_with=[tensorboard, mlflow]", "teachers.0.training.log_with=wandb"])
    assert recipe.student.training.log_with == ["tensorboard", "mlflow"] and recipe.teachers[0].training.log_with == "wandb"
    with pytest.raises(DistillError, match="expected a tracker name or a list of them"):
        load_recipe(tiny_recipe, ["student.training.log_with=3"])
