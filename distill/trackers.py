"""Experiment trackers for the training loop (:mod:`distill.training`), through Accelerate.

``training.log_with`` names any tracker Accelerate supports (``tensorboard``, ``wandb``, ``mlflow``,
``trackio``, ``aim``, ``comet_ml``, ``clearml``, ``dvclive``, ..., or a list of them); one whose
package is missing is a warning and the run trains without it
(:func:`distill.distributed.installed_trackers`). Each model is its own run, named after the model
(a teacher's name, ``student``, ``baseline``: Accelerate's ``project_name``), its local files under
``out_dir/runs`` (tensorboard: ``out_dir/runs/<name>``), its config the model's recipe section
flattened (``training.lr``, ``hidden_size``, ...). Every number of a ``metrics.jsonl`` row is logged at
the row's step as ``split/key``, the same value:

* ``train/loss`` (the loss trained on: for the student the blend of CE and KL), ``train/ce`` and
  ``train/kl`` (what ``compute_loss`` logs: the student both, the baseline ``ce``), each the
  token-weighted mean since the previous train row;
* ``train/lr``, ``train/grad_norm`` (before clipping; absent without clipping), ``train/tokens_per_s``
  (target tokens per second of the training steps since the previous train row, all processes: batch
  fetching included, validation, checkpoints and logging not), ``train/tflops`` (model TFLOP/s per
  device) and ``train/mfu`` (model FLOPs utilisation, a fraction of the device's peak; absent when the
  peak is unknown, as on a CPU without ``--peak-tflops``: :mod:`distill.speed`), ``train/tokens``
  (target tokens so far), ``train/epoch``, ``train/elapsed_s``;
* ``val/loss`` (token-weighted CE), ``val/ppl``, ``val/tokens``, ``val/epoch``.

A fresh start removes ``out_dir/runs`` with ``metrics.jsonl``; a resumed run logs on from its step.
The trackers are finished before the final folder is written, so the files it keeps are complete, and
with each tracker's ``finish`` rather than ``Accelerator.end_training``, which also destroys the
process group that the next model trained in the same process (the pipeline's) still needs.
"""
from __future__ import annotations

import json
from pathlib import Path

from distill.distributed import RUNS


def start(accelerator, out_dir: Path, name: str, config: dict) -> bool:
    """One tracker run per model, named after it, its local files under ``out_dir/runs``; True (the
    caller ends them with :func:`end`)."""
    runs = Path(out_dir) / RUNS
    if accelerator.is_main_process:
        runs.mkdir(parents=True, exist_ok=True)
    # Trackers that would otherwise write into the working directory, which every model shares.
    init_kwargs = {"wandb": {"dir": str(runs)}, "dvclive": {"dir": str(runs / name)}}
    accelerator.init_trackers(name, config=config, init_kwargs=init_kwargs)
    return True


def end(accelerator) -> None:
    """``Accelerator.end_training`` without destroying the process group (the next model needs it)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()


def flat_config(section: dict, prefix: str = "") -> dict:
    """A recipe section as the flat mapping trackers take: ``{"training.lr": 0.0003, ...}``; a list
    becomes its JSON text (``"[1.0, 2.0]"``), since trackers take single values only."""
    flat = {}
    for key, value in section.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return flat
