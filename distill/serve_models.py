"""The models a server holds: which folders a command line names, loading each once into a
:class:`ModelSlot` (one generation at a time), and one generation with a deadline and a cancel switch.

A target is a model folder or a recipe YAML, a recipe optionally followed by ``key=value``
overrides (``recipes/tiny.yaml output_dir=models/try``); a recipe is loaded and checked with
:func:`distill.recipe.load_recipe` and stands for its finished model folders.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from distill.artifacts import ModelInfo, is_finished, model_dirs, model_names
from distill.errors import DistillError
from distill.generate import stream_generate
from distill.model_folder import load_model
from distill.recipe import Recipe, load_recipe
from distill.serve_requests import DEFAULTS, GenerationRequest

_RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass
class ModelSlot:
    """One loaded model, what the page shows about it, and its one-generation-at-a-time lock."""

    id: str
    path: Path
    model: Any
    tokenizer: Any
    meta: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, **self.meta, "path": str(self.path)}


def read_targets(targets: Sequence[str | Path]) -> list[Path | Recipe]:
    """Each target as a model folder or a loaded recipe; the ``key=value`` arguments after a
    recipe are its overrides. DistillError names a target that is neither, or a bad recipe."""
    groups: list[tuple[Path, list[str]]] = []
    for target in targets:
        text = str(target)
        if "=" in text and not Path(text).exists():
            if not groups or groups[-1][0].suffix not in _RECIPE_SUFFIXES:
                raise DistillError(f"{text}: a key=value override follows the recipe it changes, e.g. recipes/tiny.yaml output_dir=models/try")
            groups[-1][1].append(text)
        else:
            groups.append((Path(target), []))
    return [_read_target(path, overrides) for path, overrides in groups]


def _read_target(path: Path, overrides: list[str]) -> Path | Recipe:
    if path.is_file() and path.suffix in _RECIPE_SUFFIXES:
        return load_recipe(path, overrides)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DistillError(f"{path}: not a model folder (no config.json); give a folder written by save_pretrained or a recipe YAML")
        return path
    if path.exists():
        raise DistillError(f"{path}: neither a model folder nor a recipe .yaml file")
    raise DistillError(f"{path}: not found; give a model folder (e.g. models/tiny/student) or a recipe YAML")


def served_dirs(items: Sequence[Path | Recipe]) -> list[Path]:
    """The model folders to serve, without repeats.

    A recipe stands for its finished model folders (those holding a ``distill.json``): its
    teachers, then the student and the baseline.
    """
    dirs: list[Path] = []
    for item in items:
        if isinstance(item, Recipe):
            found = _recipe_model_dirs(item)
            if not found:
                raise DistillError(
                    f"{item.source}: no finished model folder under its output_dir (none with a distill.json); "
                    f"train one first, e.g. accelerate launch -m distill.student {item.command_hint()}"
                )
            dirs += found
        else:
            dirs.append(item)
    unique: list[Path] = []
    for path in dirs:
        if path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return unique


def find_model_dirs(targets: Sequence[str | Path]) -> list[Path]:
    """Model folders to serve: each target is a model folder or a recipe YAML (see :func:`served_dirs`)."""
    return served_dirs(read_targets(targets))


def _recipe_model_dirs(recipe: Recipe) -> list[Path]:
    candidates = model_dirs(recipe) + ([] if recipe.student.baseline else [recipe.paths.baseline])
    # Teacher folders left in output_dir by an earlier version of the recipe are served too; hidden
    # ones are a writer's temporaries (``.llama.<pid>-<random>.tmp``), complete or not.
    teachers = recipe.paths.root / "teachers"
    candidates += [path for path in sorted(teachers.glob("[!.]*")) if path not in candidates]
    return [path for path in candidates if is_finished(path)]


def recipe_defaults(items: Sequence[Path | Recipe]) -> dict[str, Any]:
    """The first recipe's ``generate`` settings (or {}), so the page starts where the recipe does."""
    for item in items:
        if isinstance(item, Recipe):
            return {key: getattr(item.generate, key) for key in DEFAULTS}
    return {}


def model_meta(path: Path, model: Any, info: ModelInfo) -> dict[str, Any]:
    """What the page shows: name, role, arch, size and validation perplexity (from distill.json)."""
    metrics = info.metrics
    num_parameters = info.num_parameters
    if not isinstance(num_parameters, int):
        num_parameters = sum(p.numel() for p in model.parameters())
    val_ppl = metrics.get("val_ppl", info.extra.get("val_ppl"))
    return {
        "name": str(info.name or path.name),
        "role": str(info.role or "model"),
        "arch": str(info.arch or getattr(getattr(model, "config", None), "model_type", "") or ""),
        "num_parameters": num_parameters,
        "val_ppl": float(val_ppl) if isinstance(val_ppl, (int, float)) and math.isfinite(val_ppl) else None,
        "seq_len": info.seq_len,
    }


def load_slots(model_dirs: Sequence[Path], device: str | None = None) -> dict[str, ModelSlot]:
    """Load every model folder once; ids are :func:`distill.artifacts.model_names` (``llama``, ``teacher-llama``)."""
    slots: dict[str, ModelSlot] = {}
    for key, path in model_names(model_dirs).items():
        model, tokenizer, info = load_model(path, device=device)
        slots[key] = ModelSlot(key, Path(path), model, tokenizer, model_meta(Path(path), model, info))
    return slots


def _stopping_criteria(deadline: float, cancel: threading.Event, state: dict[str, Any], client_gone: Callable[[], bool] | None):
    """Stops generation at the wall-clock deadline, or when ``cancel`` is set or ``client_gone()``
    says the client has left (checked per token)."""
    class _DeadlineOrCancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if time.monotonic() >= deadline:
                state["stopped"] = "timeout"
            elif cancel.is_set() or (client_gone is not None and client_gone()):
                state["stopped"] = "cancelled"
            stop = state["stopped"] in ("timeout", "cancelled")
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_DeadlineOrCancel()])


def generate_pieces(slot: ModelSlot, request: GenerationRequest, deadline: float, cancel: threading.Event, state: dict[str, Any],
                    client_gone: Callable[[], bool] | None = None) -> Iterator[str]:
    """Text pieces of one generation; ``state["stopped"]`` ends as "end" (max_new_tokens or </s>), "timeout" or "cancelled".

    The caller holds ``slot.lock``. Stopping early goes through a StoppingCriteria, so the model is
    free again within one token of a timeout, of ``cancel`` or of ``client_gone()`` turning true;
    closing this iterator stops it too.
    """
    state["stopped"] = "end"
    criteria = _stopping_criteria(deadline, cancel, state, client_gone)
    yield from stream_generate(slot.model, slot.tokenizer, request.prompt, stopping_criteria=criteria,
                               context_length=slot.meta["seq_len"], **request.params)
