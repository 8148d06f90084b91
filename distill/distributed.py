"""The Accelerate side of a run: which processes and device it has, and the ``Accelerator`` for a model.

Every stage asks :func:`distributed_state` (``main_process_first``, ranks, device); each model that
trains gets its own ``Accelerator`` from :func:`make_accelerator`, so its checkpoints hold only its
model and optimizer, while all of them in one process share Accelerate's one state (process group,
device, mixed precision).
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env

from distill.errors import DistillError
from distill.recipe import TrainingConfig


def _use_cpu() -> bool:
    """CPU when asked (``--cpu`` / ACCELERATE_USE_CPU) or when several processes run without a GPU.

    Accelerate only forms a multi-process CPU group when told to use the CPU; without this, two
    processes launched on a CPU-only machine would each train alone and overwrite each other.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return parse_flag_from_env("ACCELERATE_USE_CPU") or (world > 1 and not torch.cuda.is_available())


def distributed_state():
    """Accelerate's ``PartialState`` for this process (``main_process_first``, ranks, device)."""
    state = PartialState(cpu=_use_cpu())
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and state.num_processes != world:
        raise DistillError(
            f"launched as {world} processes but Accelerate formed a group of {state.num_processes}; "
            "on CPU use ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N ..."
        )
    return state


def make_accelerator(cfg: TrainingConfig, out_dir: str | Path):
    """An ``Accelerator`` for ``cfg``: mixed precision from the recipe (null = accelerate config),
    tensorboard only when asked for and installed."""
    log_with = None
    if cfg.log_with == "tensorboard":
        if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
            log_with = "tensorboard"
        else:
            warnings.warn("training.log_with is tensorboard but it is not installed; pip install tensorboard", stacklevel=2)
    distributed_state()
    return Accelerator(
        cpu=_use_cpu(), mixed_precision=cfg.mixed_precision, log_with=log_with, project_dir=str(Path(out_dir) / "runs")
    )
