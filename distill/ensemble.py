"""The frozen teachers of a student: :class:`TeacherEnsemble`, and the target they give each batch.

Teachers are model folders (checked at once, loaded lazily through
:func:`distill.model_folder.load_causal_lm`, the one path that validates a folder's weights and config)
or loaded ``transformers`` causal LMs. All of them and the student share one tokenizer: a folder
whose tokenizer differs is refused. The ensemble knows each teacher's identity hash (what a finished
student and the logit cache record), loads them frozen (``eval()``, no gradients) onto the
accelerator's device (bf16 when training in bf16), and gives the KD step its target for a batch,
``batch -> TeacherTarget``:

* :func:`live_target`: the teachers run on the batch, and their lm_heads are applied chunk by chunk
  inside the loss (:func:`distill.teacher_target.teacher_head_target`);
* :func:`cached_target`: the batch's rows of a :class:`~distill.logit_cache.TeacherLogitCache`,
  which :meth:`TeacherEnsemble.logit_cache` opens, or builds once when it is missing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from distill.artifacts import model_folder_sha256, module_sha256, read_info, tokenizer_sha256
from distill.data import blocks_sha256
from distill.errors import DistillError
from distill.logit_cache import MANIFEST, TOPK_TAIL, TeacherLogitCache
from distill.losses import LossConfig
from distill.model_folder import check_model_dir, load_causal_lm, model_config
from distill.teacher_target import TeacherTarget, teacher_head_target


@dataclasses.dataclass
class Teacher:
    """A frozen teacher: its model (loaded lazily from ``path``), name and identity hash."""

    name: str
    path: Path | None  # the model folder; None for a model handed over in memory
    model: Any = None
    sha256: str | None = None


def _output_rows(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


class TeacherEnsemble:
    """The teachers of one student, in order (the order of ``teacher_weights``).

    Args:
        teachers: model folders (anything ``AutoModelForCausalLM.from_pretrained`` loads that holds
            the tokenizer or a ``distill.json`` with its hash) or loaded ``transformers`` models.
        tokenizer: the student's loaded tokenizer; every teacher folder must have the same one.
        vocab_size: the vocabulary the loss compares over (default: the smallest output width of
            the teachers, else the tokenizer's length).
    """

    def __init__(self, teachers: Sequence[str | Path | Any], tokenizer, vocab_size: int | None = None):
        self.tokenizer_sha256 = tokenizer_sha256(tokenizer)
        self.members = [self._member(i, teacher) for i, teacher in enumerate(teachers)]
        self.vocab_size = int(vocab_size) if vocab_size else self._smallest_vocab(len(tokenizer))

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Teacher]:
        return iter(self.members)

    @property
    def names(self) -> list[str]:
        return [teacher.name for teacher in self.members]

    def _member(self, i: int, teacher) -> Teacher:
        if not isinstance(teacher, (str, Path)):
            if not hasattr(teacher, "get_output_embeddings"):
                raise DistillError(f"teachers[{i}]: {type(teacher).__name__} is not a transformers causal LM or a model folder")
            name = getattr(getattr(teacher, "config", None), "name_or_path", "") or f"teacher{i}"
            return Teacher(name=Path(str(name)).name or f"teacher{i}", path=None, model=teacher)
        folder = check_model_dir(teacher)  # a damaged teacher stops the student before any work
        info = read_info(folder)
        if (folder / "tokenizer.json").is_file():
            theirs = tokenizer_sha256(folder)
        else:
            theirs = info.tokenizer_sha256 if info else None
        if not theirs:
            raise DistillError(
                f"{folder}: has no tokenizer.json, so it cannot be checked against the student's tokenizer; "
                "save the teacher's tokenizer into its folder (tokenizer.save_pretrained)"
            )
        mine = self.tokenizer_sha256
        if theirs != mine:
            raise DistillError(
                f"{folder}: this teacher was trained with another tokenizer (sha256 {theirs[:12]}... vs the "
                f"student's {mine[:12]}...); distillation needs one shared vocabulary: retrain the teacher "
                "with this tokenizer or give the student the teacher's tokenizer"
            )
        return Teacher(name=info.name if info and info.name else folder.name, path=folder)

    def _smallest_vocab(self, tokenizer_len: int) -> int:
        sizes = []
        for teacher in self.members:
            if teacher.model is not None:
                sizes.append(_output_rows(teacher.model))
            else:
                sizes.append(int(model_config(teacher.path).get("vocab_size") or tokenizer_len))
        return min(sizes) if sizes else tokenizer_len

    def check(self, loss: LossConfig) -> None:
        """DistillError when ``loss`` cannot run on these teachers: a KD term and no teacher, or not
        one ``teacher_weights`` entry per teacher."""
        if loss.uses_teachers and not self.members:
            raise DistillError(
                f"student.alpha is {loss.alpha}, so the loss needs teachers, but none were given; "
                "pass teacher model folders or set alpha=1 for plain training"
            )
        if loss.teacher_weights is not None and len(loss.teacher_weights) != len(self.members):
            raise DistillError(
                f"student.teacher_weights: {len(loss.teacher_weights)} weights for {len(self.members)} teachers; "
                "give one per teacher or null"
            )

    def hashes(self) -> list[str]:
        """sha256 identity of each teacher (folder: config + weights; module: its parameters)."""
        for teacher in self.members:
            if teacher.sha256 is None:
                teacher.sha256 = model_folder_sha256(teacher.path) if teacher.path else module_sha256(teacher.model)
        return [teacher.sha256 for teacher in self.members]

    def load(self) -> list[torch.nn.Module]:
        """Every teacher's model (folders are loaded once), frozen; each must cover the vocabulary."""
        for teacher in self.members:
            if teacher.model is None:
                teacher.model = load_causal_lm(teacher.path)
            rows = _output_rows(teacher.model)
            if rows < self.vocab_size:
                raise DistillError(
                    f"{teacher.path or teacher.name}: the teacher has {rows} output rows but the student {self.vocab_size}; "
                    "they must share the tokenizer and vocabulary size (tokenizer.vocab_size)"
                )
            teacher.model.eval().requires_grad_(False)
        return [teacher.model for teacher in self.members]

    def place(self, accelerator) -> list[torch.nn.Module]:
        """:meth:`load`, then move the teachers to the accelerator's device (in bf16 when it trains in bf16)."""
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else None
        return [model.to(accelerator.device, dtype=dtype) for model in self.load()]

    def release(self) -> None:
        """Drop the teachers loaded from folders (they are loaded again when needed)."""
        for teacher in self.members:
            if teacher.path is not None:
                teacher.model = None
        gc.collect()

    def logit_cache(self, blocks, loss: LossConfig, *, path: Path, top_k: int, seq_len: int, batch_size: int,
                    accelerator, role: str = "student", method: str = TOPK_TAIL, samples: int = 64,
                    seed: int = 0) -> TeacherLogitCache:
        """The teacher-logit cache of ``blocks`` at ``path``: opened when it exists (refused when made
        for other teachers, tokenizer, loss settings, method, ``top_k`` (topk_tail) or ``samples`` and
        ``seed`` (sampled), or blocks), else built once with the teachers."""
        path = Path(path)
        per_method = {"top_k": int(top_k)} if method == TOPK_TAIL else {"samples": int(samples), "seed": int(seed)}
        expect = {
            "teacher_hashes": self.hashes(),
            "tokenizer_hash": self.tokenizer_sha256,
            "temperature": float(loss.temperature),
            "method": method,
            **per_method,
            "ensemble": loss.ensemble,
            "weights": loss.teacher_weights,
            "vocab_size": self.vocab_size,
            "seq_len": seq_len,
            "num_blocks": len(blocks),
            "dataset_sha256": blocks_sha256(blocks),
        }
        if (path / MANIFEST).is_file():
            return TeacherLogitCache.open(path, expect=expect)
        models = self.place(accelerator)
        if accelerator.is_main_process:
            what = f"top {top_k} + tail" if method == TOPK_TAIL else f"{samples} samples per token"
            print(f"{role}: building the teacher-logit cache ({what}) in {path}", file=sys.stderr)
        cache = TeacherLogitCache.build(
            models, blocks, path, temperature=loss.temperature, top_k=top_k, method=method, samples=samples, seed=seed,
            vocab_size=self.vocab_size, teacher_hashes=expect["teacher_hashes"], tokenizer_hash=self.tokenizer_sha256,
            ensemble=loss.ensemble, weights=loss.teacher_weights, batch_size=batch_size, accelerator=accelerator,
            dataset_sha256=expect["dataset_sha256"],
        )  # fmt: skip
        self.release()
        cache.check(expect)
        return cache


def live_target(models: Sequence[torch.nn.Module], autocast=contextlib.nullcontext) -> Callable[[dict], TeacherTarget]:
    """``batch -> target``: the teachers' final hidden states on the batch (no grad, under
    ``autocast``, e.g. ``accelerator.autocast``), with their lm_heads applied per chunk of the loss."""

    def target(batch: dict) -> TeacherTarget:
        states, weights, biases = [], [], []
        with torch.no_grad(), autocast():
            for teacher in models:
                out = teacher.base_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False)
                states.append(out[0])  # (B, T, H_k)
                head = teacher.get_output_embeddings()
                weights.append(head.weight)
                biases.append(head.bias)
        return teacher_head_target(states, weights, biases)

    return target


def cached_target(cache: TeacherLogitCache) -> Callable[[dict], TeacherTarget]:
    """``batch -> target``: the cached sparse target of the batch's blocks, on the batch's device:
    ``batch["teacher_target"]`` when the loader read it (:class:`distill.fast.CachedTargets`), else read
    here by ``batch["block_index"]`` (from :class:`distill.data.IndexedBlocks`)."""

    def target(batch: dict) -> TeacherTarget:
        if "teacher_target" in batch:
            return batch["teacher_target"].to(batch["input_ids"].device)
        return cache[batch["block_index"]].to(batch["input_ids"].device)

    return target
