"""Words seen in training, and the model folders saved as it passes ``training.save_at_words``.

The BabyLM challenge asks for a model at 1M, 2M, ..., 10M words seen. Words seen are counted from
the target tokens trained on (``train_tokens`` of the loop: all processes, restored by every checkpoint)::

    words_seen = floor(train_tokens * train_words / epoch_tokens)

``train_words`` is the whitespace word count of the train split's records (what the corpus manifest
counts, :func:`distill.corpus.records.count_words`) and ``epoch_tokens`` the target tokens of one pass
over its blocks, ``blocks * (block length - 1)`` (a block of T tokens predicts T - 1; distill's blocks
are full and every label is a target). So one epoch counts exactly the split's words (with several
processes a few more: Accelerate fills their last batch with repeated blocks), each further epoch
counts them again, and inside an epoch words go in step with tokens at the split's mean ratio: exact
enough for checkpoints that are 1M words apart, while a step of 128 blocks of 128 tokens is ~12k words.

When an optimizer step takes words seen to or past a count of ``save_at_words``, the main process
writes a whole model folder (:func:`distill.model_card.save_model_folder`: weights, config, tokenizer,
card, ``distill.json`` with the role, ``words_seen``, ``step`` and the metrics so far) to
``<model folder>/words/<count>/``, e.g. ``words/1M/``, ``words/2.5M/``, ``words/100k/``, before any
checkpoint of that step, so a resumed run never skips one. The final write of the model folder keeps
them (hard links). A fresh start removes the old run's ``words/`` with its checkpoints and metrics; a
resume keeps the folders written and does not save again a count its checkpoint has passed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from distill import fsdp
from distill.artifacts import WORDS_DIR, ModelInfo, file_sha256
from distill.corpus.records import count_words, iter_records
from distill.counts import format_count
from distill.data import META, IndexedBlocks
from distill.errors import DistillError
from distill.model_card import save_model_folder
from distill.recipe import TrainingConfig


def split_words(path: str | Path) -> int:
    """Whitespace words of a split file's records, as the corpus manifest counts them."""
    return sum(count_words(text) for text in iter_records(path))


def train_words_of(data: Any) -> int | None:
    """Words of the text behind training data: a split file, a list of texts, or blocks that
    :func:`distill.data.build_blocks` cached (its ``distill_blocks.json`` names the split file, checked
    against its sha256); None when unknown (blocks made in memory)."""
    if isinstance(data, IndexedBlocks):
        data = data.dataset
    if isinstance(data, (str, Path)):
        return split_words(data)
    if isinstance(data, list) and data and all(isinstance(text, str) for text in data):
        return sum(count_words(text) for text in data)
    for cache in getattr(data, "cache_files", None) or []:
        try:
            meta = json.loads((Path(cache["filename"]).parent / META).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        split = Path(str(meta.get("split") or ""))
        if meta.get("split") and split.is_file() and file_sha256(split) == meta.get("split_sha256"):
            return split_words(split)
    return None


def _epoch_tokens(dataset) -> int:
    """Target tokens of one pass over a block dataset: blocks x (block length - 1)."""
    return len(dataset) * (len(dataset[0]["input_ids"]) - 1) if len(dataset) else 0


@dataclasses.dataclass
class WordSnapshots:
    """The training loop's count of words seen and its ``save_at_words`` folders (see the module doc)."""

    name: str  # the model's name, for the log
    train_words: int | None  # words of one epoch; None: unknown, so no count
    epoch_tokens: int  # target tokens of one epoch
    pending: list[int]  # counts of save_at_words not yet passed, ascending
    folder: Path | None = None  # <model folder>/words, once started
    tokenizer: Any = None
    info: ModelInfo | None = None

    @classmethod
    def plan(cls, cfg: TrainingConfig, train_dataset, train_words: int | None, name: str) -> "WordSnapshots":
        """Count the train words (``train_words`` when given); DistillError, before the loop touches the
        model folder, when ``save_at_words`` is set and they cannot be counted."""
        words = train_words if train_words is not None else train_words_of(train_dataset)
        if cfg.save_at_words and words is None:
            raise DistillError(f"{name}: training.save_at_words needs the train text's word count; train on a split file or "
                               "texts, pass train_words=, or set save_at_words: []")
        return cls(name=name, train_words=words, epoch_tokens=_epoch_tokens(train_dataset), pending=sorted(cfg.save_at_words))

    def seen(self, train_tokens: int) -> int | None:
        """Words seen after ``train_tokens`` target tokens (None when the train words are unknown)."""
        if self.train_words is None or self.epoch_tokens <= 0:
            return None
        return train_tokens * self.train_words // self.epoch_tokens

    def start(self, run, tokenizer, info: ModelInfo) -> "WordSnapshots":
        """Bind to a set-up run (:class:`distill.training._Run`): a fresh one removes the old ``words/``;
        counts a resumed run has passed are dropped; the main process logs which counts this run reaches."""
        self.folder, self.tokenizer, self.info = run.out_dir / WORDS_DIR, tokenizer, info
        main = run.accelerator.is_main_process
        if run.progress.step == 0 and main:
            shutil.rmtree(self.folder, ignore_errors=True)  # the replaced model's, like its checkpoints and metrics
        now = self.seen(run.progress.train_tokens) or 0
        passed = [count for count in self.pending if count <= now]
        self.pending = self.pending[len(passed):]
        if main and (self.pending or passed):
            print(self._plan_line(run, passed), file=sys.stderr)
        return self

    def _plan_line(self, run, passed: list[int]) -> str:
        epoch_steps = max(math.ceil(len(run.train_dl) / run.cfg.grad_accum), 1)
        total = self.train_words * run.total_steps // epoch_steps
        reached = [format_count(c) for c in self.pending if c <= total]
        never = [format_count(c) for c in self.pending if c > total]
        line = (f"{self.name}: save_at_words: {', '.join(reached) or 'none'} to be saved in {self.folder} "
                f"({format_count(self.train_words)} train words per epoch, about {format_count(total)} in this run)")
        if never:
            line += f"; {', '.join(never)} never reached"
        if passed:
            line += f"; {', '.join(map(format_count, passed))} passed before the checkpoint resumed from"
        return line

    def after_step(self, run) -> None:
        """Called by every process after each optimizer step: save a folder for each count just passed."""
        if not self.pending:
            return
        words = self.seen(run.progress.train_tokens)
        passed = [count for count in self.pending if count <= words]
        if not passed:
            return
        self.pending = self.pending[len(passed):]
        state_dict = run.accelerator.get_state_dict(run.model)  # every process takes part (sharded models)
        if run.accelerator.is_main_process:
            for count in passed:
                self._save(run, count, words, state_dict)
        run.accelerator.wait_for_everyone()

    def _save(self, run, count: int, words: int, state_dict) -> None:
        progress = run.progress
        so_far = {"words_seen": words, "steps": progress.step, "train_tokens": progress.train_tokens,
                  "epochs": round(progress.epoch + progress.batches_in_epoch / max(len(run.train_dl), 1), 3)}
        if math.isfinite(run.last_train_loss):
            so_far["train_loss"] = run.last_train_loss
        if progress.last_val:
            so_far.update(val_loss=progress.last_val["loss"], val_ppl=progress.last_val["ppl"], val_step=progress.last_val["step"])
        info = dataclasses.replace(self.info, metrics={**self.info.metrics, **so_far}, words_seen=words, step=progress.step)
        folder = self.folder / format_count(count)
        save_model_folder(folder, fsdp.model_to_save(run.accelerator, run.model, state_dict), self.tokenizer, info, state_dict=state_dict,
                          with_samples=False)
        print(f"{self.name}: {words:,} words seen at step {progress.step}: saved {folder}", file=sys.stderr)

    def final_metrics(self, train_tokens: int) -> dict:
        """``{"words_seen": ...}`` for the finished model's metrics ({} when the count is unknown)."""
        words = self.seen(train_tokens)
        return {} if words is None else {"words_seen": words}
