"""The Accelerate side of a run: which processes and device it has, and the ``Accelerator`` for a model.

Every stage asks :func:`distributed_state` (``main_process_first``, ranks, device); each model that
trains gets its own ``Accelerator`` from :func:`make_accelerator`, so its checkpoints hold only its
model and optimizer, while all of them in one process share Accelerate's one state (process group,
device, mixed precision).

Experiment trackers are Accelerate's own: :func:`tracker_names` is the list the installed Accelerate
knows (so a tracker it adds, or one registered with ``accelerate.tracking.register_tracker_class``,
needs no change here), and :func:`make_accelerator` starts the ones ``training.log_with`` names.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, parse_flag_from_env

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


RUNS = "runs"  # in a model folder: the trackers' local files (tensorboard's events, ...), one subfolder per run


def tracker_names() -> list[str]:
    """The ``log_with`` names the installed Accelerate knows, sorted, then ``all`` (every installed one)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    return sorted(LOGGER_TYPE_TO_CLASS) + ["all"]


def installed_trackers(log_with: str | list[str] | None) -> list[str]:
    """The trackers of ``log_with`` whose package is installed, in order; each missing one is a
    warning (main process) with its pip command, and the run trains without it.

    Warned, not refused at recipe validation: every command validates the recipe, also those that
    never train (corpus, evaluate, serve) and often on another machine than the one that trains, and
    ``metrics.jsonl`` records every logged value whatever the trackers, so nothing is lost.
    """
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    names = [log_with] if isinstance(log_with, str) else list(log_with or [])
    builtin = {str(t) for t in LoggerType}
    available = {str(t) for t in get_available_trackers()}
    kept = []
    for name in dict.fromkeys(names):
        # "all" and trackers registered in this process need no package check.
        if name == "all" or name not in builtin or name in available:
            kept.append(name)
        elif PartialState().is_main_process:
            warnings.warn(f"training.log_with: {name} is not installed, so this run is not logged to it; pip install {name}", stacklevel=3)
    return kept


def make_accelerator(cfg: TrainingConfig, out_dir: str | Path):
    """An ``Accelerator`` for ``cfg``: mixed precision from the recipe (null = accelerate config),
    non-blocking copies to the device, the installed trackers of ``cfg.log_with``
    (:func:`installed_trackers`), their local files under ``out_dir/runs``."""
    distributed_state()
    return Accelerator(
        cpu=_use_cpu(), mixed_precision=cfg.mixed_precision, log_with=installed_trackers(cfg.log_with) or None,
        project_dir=str(Path(out_dir) / RUNS),
        dataloader_config=DataLoaderConfiguration(non_blocking=True),  # copies from pinned memory (CUDA) overlap the step
    )
