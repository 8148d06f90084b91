"""One Accelerate training loop for every model: teachers, the student and the baseline.

``train(model, train_dataset=..., eval_dataset=..., training_cfg=..., out_dir=...)`` runs AdamW with
warmup + cosine/linear/constant, gradient accumulation, clipping, mixed precision, validation
(CE loss and perplexity) each epoch, ``metrics.jsonl``, checkpoints, SIGTERM handling, ``resume``,
a NaN/inf stop, and the final model folder. It runs the same on one CPU, one GPU or under
``accelerate launch`` with several processes.

The loss contract (what the student plugs in)
---------------------------------------------
``compute_loss(model, batch, window) -> (loss, logs)`` is called once per micro-batch.

* ``batch``: what ``collate_fn`` returned, moved to the device (default: ``input_ids`` and
  ``labels``, both ``(B, T)`` long; labels equal the inputs and the model shifts them; ``-100``
  marks a position that is not a target).
* ``window``: a :class:`LossWindow`. Before the first micro-batch of an accumulation window the loop
  collects that window's ``grad_accum`` micro-batches and sums ``count_tokens(batch)`` over all of
  them and over all processes: ``window.num_tokens`` is that GLOBAL count of target tokens.
* ``loss`` (0-dim tensor with grad): this micro-batch's share of the window's per-token mean, i.e.
  ``(sum over this micro-batch's target tokens of the per-token loss) / window.num_tokens``.
  The loop undoes DDP's gradient averaging and Accelerate's ``1/grad_accum``, so the optimizer step
  uses exactly the gradient of the mean over every target token of the window, however the batch
  is cut across micro-batches and processes (one batch of 8 == two accumulated batches of 4).
* ``logs``: ``{name: 0-dim tensor or float}`` in the same units (sum over this micro-batch's tokens
  / ``window.num_tokens``). The loop adds them over micro-batches and processes, which gives the
  window's per-token mean, and writes them to ``metrics.jsonl`` next to ``loss`` (e.g. ``ce``, ``kl``).

The default, :func:`causal_lm_loss`, is the model's own cross-entropy with
``num_items_in_batch=window.num_tokens``. A loss that is not a per-token sum (BabyLlama's legacy
``batchmean`` KL) rescales itself with ``window.num_tokens`` and ``window.num_sequences``.

Checkpoints and outputs
-----------------------
``out_dir/checkpoints/step-N/`` (``accelerator.save_state`` plus the loop's progress) every
``save_every`` steps and when SIGTERM/SIGINT arrives (then :class:`TrainingInterrupted` is raised
after saving). ``resume=True`` loads the newest one, skips the batches already seen in that epoch
and continues with the same data order, RNG, optimizer and schedule. At the end the folder is
rebuilt atomically with ``config.json``, ``model.safetensors``, the tokenizer, ``metrics.jsonl`` and
``distill.json`` (written last); the checkpoints go with the old folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from distill.atomic import atomic_dir, atomic_write_text
from distill.data import collate_blocks
from distill.errors import DistillError
from distill.models import count_parameters
from distill.recipe import TrainingConfig

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclasses.dataclass
class LossWindow:
    """What ``compute_loss`` knows about the accumulation window its micro-batch belongs to."""

    num_tokens: torch.Tensor  # 0-dim long tensor on the device: target tokens in the whole window, all processes
    num_sequences: int  # sequences in the whole window, all processes
    num_micro_batches: int  # micro-batches of this window on this process (grad_accum, fewer at an epoch's end)
    step: int  # the optimizer step this window makes (1-based)


LossFn = Callable[[torch.nn.Module, dict, LossWindow], "tuple[torch.Tensor, dict[str, Any]]"]


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint was saved. ``checkpoint`` is its folder."""

    def __init__(self, message: str, checkpoint: Path):
        super().__init__(message)
        self.checkpoint = checkpoint


def count_target_tokens(batch: dict) -> torch.Tensor:
    """Positions a causal LM is scored on: labels shifted by one, ``-100`` excluded."""
    return (batch["labels"][:, 1:] != -100).sum()


def causal_lm_loss(model: torch.nn.Module, batch: dict, window: LossWindow):
    """Default loss: the model's next-token cross-entropy, summed and divided by the window's count."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        labels=batch["labels"],
        num_items_in_batch=window.num_tokens,
        use_cache=False,
    )
    return out.loss, {}


class EpochShuffleSampler(Sampler[int]):
    """A permutation that depends only on ``seed`` and the epoch, so a resumed run sees the same order."""

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items


class _Progress:
    """Loop position, saved in every checkpoint through ``register_for_checkpointing``."""

    def __init__(self):
        self.step = 0  # optimizer steps done
        self.epoch = 0  # current epoch (0-based)
        self.batches_in_epoch = 0  # micro-batches of the current epoch already used, per process
        self.train_tokens = 0  # target tokens trained on, all processes
        self.elapsed = 0.0  # seconds of training before this process started
        self.last_val: dict = {}  # the newest validation row
        self.since_log: dict[str, float] = {}  # token-weighted sums since the last train row
        self.since_log_tokens = 0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class _StopSignal:
    """Turns the first SIGTERM/SIGINT into a flag; a second one acts as the default would."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self):
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread: no handlers, no graceful stop
            pass
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete ``out_dir/checkpoints/step-N`` (half-written ones have a temp name)."""
    folder = Path(out_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return max(steps)[1] if steps else None


def _optimizer(model: torch.nn.Module, cfg: TrainingConfig) -> torch.optim.AdamW:
    # No weight decay on vectors: norms' gains and biases.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def _scheduler(optimizer, cfg: TrainingConfig, total_steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=min(cfg.warmup_steps, total_steps), num_training_steps=total_steps)


def _use_cpu() -> bool:
    """CPU when asked (``--cpu`` / ACCELERATE_USE_CPU) or when several processes run without a GPU.

    Accelerate only forms a multi-process CPU group when told to use the CPU; without this, two
    processes launched on a CPU-only machine would each train alone and overwrite each other.
    """
    from accelerate.utils import parse_flag_from_env

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return parse_flag_from_env("ACCELERATE_USE_CPU") or (world > 1 and not torch.cuda.is_available())


def distributed_state():
    """Accelerate's ``PartialState`` for this process (``main_process_first``, ranks, device)."""
    from accelerate import PartialState

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
    from accelerate import Accelerator

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


def evaluate_loss(model: torch.nn.Module, dataloader, accelerator) -> tuple[float, float, int]:
    """Token-weighted CE over a prepared dataloader, all processes: (loss, perplexity, tokens).

    Per-sequence sums and counts are gathered (``gather_for_metrics`` drops the padding samples
    Accelerate adds to even out the last batch), so the result does not depend on the process count.
    """
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    count = torch.zeros((), dtype=torch.long, device=accelerator.device)
    with torch.no_grad():
        for batch in dataloader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False).logits
            logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
            labels = batch["labels"][:, 1:]  # (B, T-1)
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="none"
            ).view_as(labels)
            mask = labels != -100
            sums, counts = accelerator.gather_for_metrics(((nll * mask).sum(1).double(), mask.sum(1)))
            total += sums.sum()
            count += counts.sum()
    model.train()
    tokens = int(count.item())
    loss = float(total.item() / max(tokens, 1))
    return loss, (math.exp(loss) if loss < 700 else float("inf")), tokens


def train(
    model: torch.nn.Module,
    *,
    train_dataset,
    eval_dataset,
    training_cfg: TrainingConfig,
    out_dir: str | Path,
    compute_loss: LossFn | None = None,
    count_tokens: Callable[[dict], torch.Tensor] | None = None,
    collate_fn: Callable[[list], dict] | None = None,
    tokenizer=None,
    extra_metadata: dict | None = None,
    resume: bool = False,
    accelerator=None,
    model_name: str = "model",
    role: str = "teacher",
) -> dict:
    """Train ``model`` and write its finished folder to ``out_dir``; return the final metrics.

    Args:
        model: a ``transformers`` causal LM (fp32; the accelerator adds autocast).
        train_dataset, eval_dataset: map-style datasets whose items ``collate_fn`` stacks
            (default :func:`distill.data.collate_blocks`: ``input_ids`` blocks, labels = inputs).
        training_cfg: the recipe's ``training`` section. ``batch_size`` is per process.
        out_dir: the model folder; checkpoints and ``metrics.jsonl`` live in it while training.
        compute_loss: ``(model, batch, window) -> (loss, logs)``; see the module docstring.
            Default :func:`causal_lm_loss`.
        count_tokens: ``batch -> 0-dim tensor``, the target tokens of a micro-batch (default:
            labels shifted by one that are not -100). Must agree with ``compute_loss``'s sums.
        tokenizer: saved into the final folder.
        extra_metadata: merged into ``distill.json`` (name, arch, recipe section, hashes, ...);
            its ``metrics`` dict is merged with the loop's.
        resume: continue from the newest checkpoint in ``out_dir/checkpoints`` (fresh start if
            none). False starts over and deletes old checkpoints and ``metrics.jsonl``.
        accelerator: reuse one (e.g. the student prepares its frozen teachers with it). Default:
            :func:`make_accelerator`. The loop does its own accumulation windows, so pass one
            made with ``gradient_accumulation_steps=1`` (the default).
        model_name, role: written to ``distill.json`` and the logs.

    Returns: ``{"val_loss", "val_ppl", "train_loss", "steps", "epochs", "train_tokens",
    "wall_time_s", "num_processes", "effective_batch_size"}``.

    Raises: :class:`DistillError` when the loss becomes NaN/inf (the newest checkpoint is kept);
    :class:`TrainingInterrupted` after saving a checkpoint on SIGTERM/SIGINT.
    """
    from tqdm.auto import tqdm

    cfg = training_cfg
    out_dir = Path(out_dir)
    compute_loss = compute_loss or causal_lm_loss
    count_tokens = count_tokens or count_target_tokens
    collate_fn = collate_fn or collate_blocks
    accelerator = accelerator or make_accelerator(cfg, out_dir)
    is_main = accelerator.is_main_process
    world = accelerator.num_processes
    ckpt_root = out_dir / CHECKPOINTS
    metrics_path = out_dir / METRICS
    started = time.time()

    checkpoint = latest_checkpoint(out_dir) if resume else None
    if resume and checkpoint is None and is_main:
        print(f"{model_name}: no checkpoint in {ckpt_root}; starting from scratch", file=sys.stderr)
    if is_main:
        # From here until the final save the folder is unfinished, whatever it held before.
        (out_dir / "distill.json").unlink(missing_ok=True)
    if checkpoint is None and is_main:
        shutil.rmtree(ckpt_root, ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    sampler = EpochShuffleSampler(len(train_dataset), cfg.seed)
    # Own generators: creating a loader iterator otherwise draws from the global RNG, so a resumed
    # run (which creates one mid-epoch) would shift every later dropout mask.
    train_dl = DataLoader(
        train_dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate_fn, generator=torch.Generator().manual_seed(cfg.seed)
    )
    eval_dl = DataLoader(
        eval_dataset, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate_fn, generator=torch.Generator().manual_seed(cfg.seed)
    )
    train_dl, eval_dl = accelerator.prepare(train_dl, eval_dl)
    accum = cfg.grad_accum
    steps_per_epoch = math.ceil(len(train_dl) / accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch

    optimizer = _optimizer(model, cfg)
    scheduler = _scheduler(optimizer, cfg, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler is not prepared: Accelerate would step it once per process per call.
    progress = _Progress()
    accelerator.register_for_checkpointing(scheduler, progress)
    if cfg.compile:
        model = torch.compile(model)

    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        if is_main:
            print(f"{model_name}: resuming from {checkpoint} (step {progress.step}, epoch {progress.epoch + 1})", file=sys.stderr)
            _truncate_metrics(metrics_path, progress.step)
    accelerator.wait_for_everyone()
    elapsed_before = progress.elapsed

    if accelerator.trackers == [] and cfg.log_with and accelerator.log_with:
        accelerator.init_trackers(model_name, config=_flat_config(cfg))

    def log(row: dict) -> None:
        if is_main:
            with open(metrics_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        if accelerator.log_with:
            accelerator.log({f"{row['split']}/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}, step=row["step"])

    def validate() -> dict:
        loss, ppl, tokens = evaluate_loss(model, eval_dl, accelerator)
        row = {"step": progress.step, "epoch": progress.epoch + 1, "split": "val", "loss": loss, "ppl": ppl, "tokens": tokens}
        log(row)
        progress.last_val = row
        return row

    def save() -> Path:
        progress.elapsed = elapsed_before + time.time() - started
        return _save_checkpoint(accelerator, ckpt_root, progress.step, cfg.keep_checkpoints)

    scale = world * accelerator.gradient_accumulation_steps  # undo DDP's mean and Accelerate's 1/accum
    pbar = tqdm(total=total_steps, initial=progress.step, desc=model_name, disable=not accelerator.is_local_main_process, dynamic_ncols=True, mininterval=1.0)
    last_train_loss = float("nan")
    model.train()
    with _StopSignal() as stop:
        while progress.step < total_steps:
            sampler.set_epoch(progress.epoch)
            loader = accelerator.skip_first_batches(train_dl, progress.batches_in_epoch) if progress.batches_in_epoch else train_dl
            batches = iter(loader)
            while progress.step < total_steps:
                window = list(itertools.islice(batches, accum))
                if not window:  # the loader ran dry early (should not happen): close the epoch anyway
                    validate()
                    progress.epoch += 1
                    progress.batches_in_epoch = 0
                    break
                counts = torch.stack([count_tokens(b).to(accelerator.device, torch.long) for b in window])
                totals = accelerator.reduce(
                    torch.stack([counts.sum(), torch.tensor(sum(len(b["input_ids"]) for b in window), device=accelerator.device)]),
                    reduction="sum",
                )
                info = LossWindow(num_tokens=totals[0], num_sequences=int(totals[1]), num_micro_batches=len(window), step=progress.step + 1)
                sums: dict[str, torch.Tensor] = {}
                for i, batch in enumerate(window):
                    # Gradients are all-reduced only on the window's last micro-batch.
                    sync = accelerator.no_sync(model) if i < len(window) - 1 else contextlib.nullcontext()
                    with sync:
                        loss, logs = compute_loss(model, batch, info)
                        accelerator.backward(loss * scale)
                    for name, value in {"loss": loss, **logs}.items():
                        value = torch.as_tensor(value, device=accelerator.device).detach().double()
                        sums[name] = sums.get(name, 0) + value
                names = list(sums)
                reduced = accelerator.reduce(torch.stack([sums[n] for n in names]), reduction="sum")
                values = dict(zip(names, reduced.tolist()))
                if not all(math.isfinite(v) for v in values.values()):
                    good = latest_checkpoint(out_dir)
                    raise DistillError(
                        f"{model_name}: training loss became {values['loss']} at step {progress.step + 1} "
                        f"(epoch {progress.epoch + 1}); stopped, last good checkpoint: {good or 'none yet'}; "
                        f"lower training.lr (now {cfg.lr:g}) or set training.max_grad_norm"
                    )
                grad_norm = None
                if cfg.max_grad_norm:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                tokens = int(totals[0].item())
                progress.step += 1
                progress.batches_in_epoch += len(window)
                progress.train_tokens += tokens
                for name, value in values.items():
                    progress.since_log[name] = progress.since_log.get(name, 0.0) + value * tokens
                progress.since_log_tokens += tokens
                pbar.update(1)
                if progress.step % cfg.log_every == 0 or progress.step == total_steps:
                    row = {"step": progress.step, "epoch": progress.epoch + 1, "split": "train"}
                    row.update({n: v / max(progress.since_log_tokens, 1) for n, v in progress.since_log.items()})
                    row["lr"] = scheduler.get_last_lr()[0]
                    if grad_norm is not None:
                        row["grad_norm"] = float(grad_norm)
                    row["tokens"] = progress.train_tokens
                    row["elapsed_s"] = round(elapsed_before + time.time() - started, 2)
                    log(row)
                    pbar.set_postfix(loss=f"{row['loss']:.3f}")
                    last_train_loss = row["loss"]
                    progress.since_log, progress.since_log_tokens = {}, 0

                if progress.batches_in_epoch >= len(train_dl):
                    validate()
                    progress.epoch += 1
                    progress.batches_in_epoch = 0
                    break
                if cfg.eval_every and progress.step % cfg.eval_every == 0:
                    validate()

                if stop.signum is not None:
                    accelerator.set_trigger()
                if accelerator.check_trigger():
                    path = save()
                    pbar.close()
                    raise TrainingInterrupted(
                        f"{model_name}: stopped by a signal at step {progress.step}/{total_steps}; "
                        f"checkpoint saved to {path}; continue with --resume",
                        path,
                    )
                if cfg.save_every and progress.step % cfg.save_every == 0 and progress.step < total_steps:
                    save()
    pbar.close()

    if progress.last_val.get("step") != progress.step:
        validate()
    wall = elapsed_before + time.time() - started
    val = progress.last_val
    metrics = {
        "val_loss": val["loss"],
        "val_ppl": val["ppl"],
        "train_loss": last_train_loss,
        "steps": progress.step,
        "epochs": round(progress.epoch + progress.batches_in_epoch / max(len(train_dl), 1), 3),
        "train_tokens": progress.train_tokens,
        "wall_time_s": round(wall, 1),
        "num_processes": world,
        "effective_batch_size": cfg.batch_size * accum * world,
    }
    if torch.cuda.is_available():
        metrics["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    _save_final(accelerator, model, out_dir, tokenizer, extra_metadata or {}, metrics, model_name, role)
    if accelerator.log_with:
        accelerator.end_training()
    return metrics


def _flat_config(cfg: TrainingConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, (int, float, str, bool))}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint being resumed, so the file reads as one run."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _save_checkpoint(accelerator, root: Path, step: int, keep: int) -> Path:
    """``save_state`` into a temp folder, then rename: a half-written checkpoint is never ``step-N``."""
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        older = sorted(
            (int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and int(m.group(1)) < step
        )
        for _, path in older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _save_final(accelerator, model, out_dir: Path, tokenizer, metadata: dict, metrics: dict, name: str, role: str) -> None:
    """Rebuild ``out_dir`` atomically as the finished model folder; ``distill.json`` is its last file."""
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        with atomic_dir(out_dir) as tmp:
            unwrapped.save_pretrained(tmp, state_dict=state_dict)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            for keep in (METRICS, "runs"):
                source = out_dir / keep
                if source.is_dir():
                    shutil.copytree(source, tmp / keep)
                elif source.is_file():
                    shutil.copy2(source, tmp / keep)
            info = dict(metadata)
            info.update(name=name, role=role, num_parameters=count_parameters(unwrapped))
            info["metrics"] = {**metadata.get("metrics", {}), **metrics}
            (tmp / "distill.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()


def refuse_unfinished(folder: str | Path, resume_or_force: bool) -> None:
    """DistillError when ``folder`` holds an unfinished run's checkpoint and the user said neither
    ``--resume`` nor ``--force``: a new run would silently throw that work away."""
    checkpoint = latest_checkpoint(folder)
    if checkpoint and not is_finished(folder) and not resume_or_force:
        raise DistillError(f"{folder}: an unfinished run left {checkpoint.name}; continue it with --resume or start over with --force")


def is_finished(folder: str | Path) -> bool:
    """A model folder is finished when its ``distill.json`` exists (it is written last)."""
    return (Path(folder) / "distill.json").is_file()
