"""What a training checkpoint holds, in safetensors and JSON only: resuming never unpickles a file.

Accelerate's ``save_state``/``load_state`` would be the canonical pair, but ``load_state`` unpickles
the registered objects (``custom_checkpoint_*.pkl``) with no weights-only guard, so a file planted in
a checkpoint folder would run code on the next resume. Here every value is a tensor (stored in a
``.safetensors`` file) or plain JSON:

* ``model.safetensors``: the unwrapped model's weights (tied weights stored once), main process.
* ``training.safetensors`` + ``training.json``: the optimizer's and scheduler's ``state_dict``, the
  loop's progress and the gradient scaler's state (fp16), main process. Under DDP every process
  holds the same ones.
* Under FSDP the same files, of whole tensors: every process takes part in gathering the model's and
  the optimizer's shards (:mod:`distill.fsdp`), the main process writes them, and a resume cuts them
  back into each process's shards; so a checkpoint resumes under FSDP, DDP or one process alike.
* ``rng-<process>.safetensors`` + ``rng-<process>.json``: each process's RNG states (torch, CUDA,
  Python ``random``, numpy), so dropout continues exactly.

A nested state becomes JSON in which a dict is ``{"dict": [[key, value], ...]}`` (keys stay ints or
strings), a tuple ``{"tuple": [...]}``, a numpy array ``{"ndarray": [...], "dtype": ...}`` and a
tensor ``{"tensor": NAME}``, NAME being its entry in the ``.safetensors`` file beside it.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from distill import fsdp

MODEL = "model.safetensors"
TRAINING = "training"  # training.json + training.safetensors
FILES = (MODEL, f"{TRAINING}.json", f"{TRAINING}.safetensors")  # what every checkpoint must hold


def write_state(folder: Path, accelerator, *, model, optimizer, scheduler, progress) -> None:
    """Write this process's part of a checkpoint into ``folder`` (every process calls it)."""
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    if fsdp.is_sharded(accelerator):  # every process gathers; the main one gets whole tensors
        weights = fsdp.full_model_state(unwrapped)
        optimizer_state = fsdp.full_optimizer_state(optimizer, accelerator.is_main_process)
    if accelerator.is_main_process:
        if fsdp.is_sharded(accelerator):
            _save_weights(weights, fsdp.aliases(unwrapped), folder / MODEL)
        else:
            save_model(unwrapped, str(folder / MODEL))
            optimizer_state = optimizer.state_dict()
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        training = {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "progress": progress.state_dict(), "scaler": scaler}
        _write_tree(folder, TRAINING, training)
    _write_tree(folder, f"rng-{accelerator.process_index}", _rng_states())


def read_state(folder: Path, accelerator, *, model, optimizer, scheduler, progress) -> None:
    """Load a checkpoint written by :func:`write_state` into the prepared model, optimizer, scheduler and
    progress, and this process's RNG states (kept as they are when it was saved by fewer processes)."""
    # Read onto the CPU (as Accelerate does); load_state_dict copies onto the parameters' device.
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    if fsdp.is_sharded(accelerator):
        fsdp.load_model_state(unwrapped, _load_weights(folder / MODEL, fsdp.aliases(unwrapped)))
    else:
        load_model(unwrapped, str(folder / MODEL), strict=True, device="cpu")
    training = _read_tree(folder, TRAINING)
    if fsdp.is_sharded(accelerator):
        fsdp.load_optimizer_state(optimizer, training["optimizer"])
    else:
        optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    progress.load_state_dict(training["progress"])
    if accelerator.scaler is not None and training["scaler"] is not None:
        accelerator.scaler.load_state_dict(training["scaler"])
    rng = f"rng-{accelerator.process_index}"
    if (folder / f"{rng}.json").is_file():
        _set_rng_states(_read_tree(folder, rng))


def _save_weights(weights: dict[str, torch.Tensor], aliases: list[list[str]], path: Path) -> None:
    """Whole weights as ``safetensors.torch.save_model`` writes a model's: of names sharing a tensor
    only the first in sorted order is stored, and the metadata maps each other one to it."""
    weights, metadata = dict(weights), {}
    for names in aliases:
        for name in names[1:]:
            if weights.pop(name, None) is not None:
                metadata[name] = names[0]
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(path), metadata=metadata or None)


def _load_weights(path: Path, aliases: list[list[str]]) -> dict[str, torch.Tensor]:
    """A checkpoint's weights with every name of the model, tied names filled from the one stored."""
    weights = load_file(str(path))
    for names in aliases:
        stored = [name for name in names if name in weights]
        for name in names:
            if stored and name not in weights:
                weights[name] = weights[stored[0]]
    return weights


def _rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _write_tree(folder: Path, stem: str, tree: Any) -> None:
    """``stem.json`` (the structure) and ``stem.safetensors`` (its tensors)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(tree, tensors)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(skeleton) + "\n", encoding="utf-8")


def _read_tree(folder: Path, stem: str) -> Any:
    tensors = load_file(str(folder / f"{stem}.safetensors"))
    return _decode(json.loads((folder / f"{stem}.json").read_text(encoding="utf-8")), tensors)


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous()
        return {"tensor": name}
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        if not all(isinstance(key, (str, int)) for key in value):
            raise TypeError(f"a checkpoint stores dicts with str or int keys, not {list(value)}")
        return {"dict": [[key, _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a checkpoint stores tensors, arrays and JSON values, not {type(value).__name__}")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode(item, tensors) for item in node]
    if not isinstance(node, dict):
        return node
    if "tensor" in node:
        return tensors[node["tensor"]]
    if "ndarray" in node:
        return np.array(node["ndarray"], dtype=node["dtype"])
    if "tuple" in node:
        return tuple(_decode(item, tensors) for item in node["tuple"])
    return {key: _decode(item, tensors) for key, item in node["dict"]}
