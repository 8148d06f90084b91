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
``out_dir/checkpoints/step-N/`` (model, optimizer, schedule, the loop's progress and RNG states, in
safetensors and JSON: :mod:`distill.checkpoint_state`) every ``save_every`` steps and when
SIGTERM/SIGINT arrives (then :class:`TrainingInterrupted` is raised after saving). ``resume=True``
loads the newest intact one (:func:`distill.checkpoints.resume_checkpoint`), skips the batches
already seen in that epoch and continues with the same data order, RNG, optimizer and schedule.
At the end the folder is rebuilt atomically with ``config.json``, ``model.safetensors``, the
tokenizer, ``metrics.jsonl`` and ``distill.json`` (written last); the checkpoints go with the old folder.
``training.save_at_words`` also saves whole model folders at counts of words seen into ``out_dir/words/``
(:mod:`distill.words_seen`, one call after each optimizer step), which the final folder keeps.

Logs and trackers
-----------------
Every train row of ``metrics.jsonl`` holds the token-weighted loss (and ``compute_loss``'s logs) since
the previous row, ``lr``, ``grad_norm``, the speed (``tokens_per_s`` of the training steps, ``tflops``,
``mfu``: :func:`distill.speed.figures`), ``tokens``, ``epoch`` and ``elapsed_s``; every val row ``loss``,
``ppl`` and ``tokens``. ``training.log_with`` sends the same numbers to experiment trackers
(:mod:`distill.trackers`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from distill import checkpoint_state, fast, fsdp, speed, trackers
from distill.artifacts import INFO_FILE, METRICS_FILE, ModelInfo
from distill.checkpoints import CHECKPOINTS, StopSignal, latest_checkpoint, resume_checkpoint, save_checkpoint, truncate_metrics
from distill.data import EpochShuffleSampler, collate_blocks
from distill.distributed import RUNS, make_accelerator
from distill.errors import DistillError, TrainingInterrupted
from distill.model_card import save_model_folder
from distill.recipe import GenerateConfig, TrainingConfig
from distill.words_seen import WordSnapshots

METRICS = METRICS_FILE


@dataclasses.dataclass
class LossWindow:
    """What ``compute_loss`` knows about the accumulation window its micro-batch belongs to."""

    num_tokens: torch.Tensor  # 0-dim long tensor on the device: target tokens in the whole window, all processes
    num_sequences: int  # sequences in the whole window, all processes
    num_micro_batches: int  # micro-batches of this window on this process (grad_accum, fewer at an epoch's end)
    step: int  # the optimizer step this window makes (1-based)
    num_positions: int = 0  # input positions (tokens the model runs on) in the whole window, all processes


LossFn = Callable[[torch.nn.Module, dict, LossWindow], "tuple[torch.Tensor, dict[str, Any]]"]


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


class _Progress:
    """Loop position, saved in every checkpoint (as JSON: plain numbers and dicts only)."""

    def __init__(self):
        self.step = 0  # optimizer steps done
        self.epoch = 0  # current epoch (0-based)
        self.batches_in_epoch = 0  # micro-batches of the current epoch already used, per process
        self.train_tokens = 0  # target tokens trained on, all processes
        self.elapsed = 0.0  # seconds of training before this process started
        self.last_val: dict = {}  # the newest validation row
        self.since_log: dict[str, float] = {}  # token-weighted sums since the last train row
        self.since_log_tokens = 0
        self.since_log_positions = 0  # input positions since the last train row, all processes (for MFU)
        self.since_log_step_time = 0.0  # seconds in training steps since the last train row (for tokens/s)
        self.positions = 0  # input positions trained on, all processes
        self.step_time = 0.0  # seconds spent in training steps (fetching the batches included; validation,
        # checkpoints and logging not), earlier processes of a resumed run included

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


@dataclasses.dataclass
class _Run:
    """One training run's parts, built by :func:`_setup` and handed to each step of :func:`train`."""

    cfg: TrainingConfig
    accelerator: Accelerator
    model: torch.nn.Module  # prepared (its layers compiled when cfg.compile resolves to on: distill.fast)
    optimizer: torch.optim.Optimizer
    scheduler: Any  # not prepared: Accelerate would step it once per process per call
    sampler: EpochShuffleSampler
    train_dl: DataLoader
    eval_dl: DataLoader
    progress: _Progress
    compute_loss: LossFn
    count_tokens: Callable[[dict], torch.Tensor]
    out_dir: Path
    name: str
    total_steps: int
    started: float  # time.time() when this process began
    elapsed_before: float = 0.0  # seconds trained by the processes before a resume
    pbar: Any = None
    last_train_loss: float = math.nan  # the newest train row's loss
    ends_trackers: bool = False  # this run started the accelerator's trackers, so it ends them
    words: Any = None  # the :class:`~distill.words_seen.WordSnapshots`: words seen, the save_at_words folders
    flops_per_token: Optional[float] = None  # model FLOPs per input position of one step (:mod:`distill.speed`)
    peak_tflops: Optional[float] = None  # one device's peak at this precision; None: unknown (no MFU)
    compile_untried: bool = False  # compiled layers that have not run a step yet (a failure there falls back to eager)

    def elapsed(self) -> float:
        """Seconds of training so far, earlier processes of a resumed run included."""
        return self.elapsed_before + time.time() - self.started


def _optimizer(model: torch.nn.Module, cfg: TrainingConfig, fused: bool = False) -> torch.optim.AdamW:
    # No weight decay on vectors: norms' gains and biases. ``fused``: one kernel for every tensor (CUDA).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if fused else {}))


def _scheduler(optimizer, cfg: TrainingConfig, total_steps: int):
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=min(cfg.warmup_steps, total_steps), num_training_steps=total_steps)


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
    info: ModelInfo | None = None,
    resume: bool = False,
    accelerator=None,
    generate: GenerateConfig | None = None,
    train_words: int | None = None,
    extra_flops: Callable[[int], float] | None = None,
) -> dict:
    """Train ``model`` and write its finished folder to ``out_dir``; return the final metrics.

    The loop follows Accelerate's ``examples/complete_nlp_example.py`` (``prepare``, gradient
    accumulation, ``backward``, ``gather_for_metrics``, ``init_trackers``/``log``/``end_training``) and
    ``examples/by_feature/checkpointing.py`` (save and load the state, then ``skip_first_batches``
    to continue mid-epoch), with checkpoints of its own that hold no pickle
    (:mod:`distill.checkpoint_state`). It forms each accumulation window itself, with ``no_sync`` on
    all but the last micro-batch as ``accumulate`` would, because the loss needs the window's global
    token count before its first micro-batch.

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
        info: what ``distill.json`` records (:class:`~distill.artifacts.ModelInfo`: name, role,
            recipe section, hashes, ...); its ``metrics`` are merged with the loop's. Its name
            labels the logs.
        resume: continue from the newest intact checkpoint in ``out_dir/checkpoints`` (fresh start
            if none; a damaged newer one is skipped with a warning). False starts over and deletes
            old checkpoints and ``metrics.jsonl``.
        accelerator: reuse one (e.g. the student prepares its frozen teachers with it). Default:
            :func:`make_accelerator`. The loop does its own accumulation windows, so pass one
            made with ``gradient_accumulation_steps=1`` (the default).
        generate: the sampling settings (the recipe's ``generate:``) of the samples in the
            folder's model card (default: "London was" with the recipe defaults).
        train_words: words of the train text, for words seen and ``training.save_at_words``
            (default: counted from the split file behind blocks of :func:`distill.data.build_blocks`).
        extra_flops: ``seq_len -> FLOPs`` per input position that ``compute_loss`` spends outside
            ``model`` (the student's live teachers' forwards), for MFU (:mod:`distill.speed`).

    Returns: ``{"val_loss", "val_ppl", "train_loss", "steps", "epochs", "train_tokens",
    "wall_time_s", "num_processes", "effective_batch_size", "tokens_per_s", "model_flops_per_token"}``,
    ``"mfu"`` when the device's peak is known and ``"words_seen"`` when the train words are known
    (:mod:`distill.words_seen`).

    Raises: :class:`DistillError` when the loss becomes NaN/inf (the newest checkpoint is kept), and
    on resume when every checkpoint is damaged or one does not fit the model; :class:`TrainingInterrupted`
    after saving a checkpoint on SIGTERM/SIGINT.
    """
    name = (info.name if info else "") or "model"
    try:
        speed.peak_override()  # a bad DISTILL_PEAK_TFLOPS is refused before the folder is touched
    except ValueError as err:
        raise DistillError(str(err)) from None
    words = WordSnapshots.plan(training_cfg, train_dataset, train_words, name)  # before the folder is touched
    run = _setup(
        model, train_dataset, eval_dataset, training_cfg, Path(out_dir), compute_loss=compute_loss or causal_lm_loss,
        count_tokens=count_tokens or count_target_tokens, collate_fn=collate_fn or collate_blocks, resume=resume,
        accelerator=accelerator, name=name,
        tracker_config=trackers.flat_config(info.recipe if info and info.recipe else {"training": training_cfg.to_dict()}),
    )
    _plan_speed(run, train_dataset, extra_flops)
    run.words = words.start(run, tokenizer, info or ModelInfo(name=name))
    try:
        run.model.train()
        with StopSignal() as stop:
            while run.progress.step < run.total_steps:
                _train_epoch(run, stop)
        run.pbar.close()
        return _finish(run, tokenizer, info or ModelInfo(name=run.name), generate)
    finally:
        _end_trackers(run)  # also when training stops with an error; nothing left to do after _finish


def _setup(model, train_dataset, eval_dataset, cfg: TrainingConfig, out_dir: Path, *, compute_loss: LossFn,
           count_tokens: Callable[[dict], torch.Tensor], collate_fn, resume: bool, accelerator, name: str,
           tracker_config: dict) -> _Run:
    """The folder, the prepared loaders, model and optimizer, the schedule, then the checkpoint's state."""
    accelerator = accelerator or make_accelerator(cfg, out_dir)
    started = time.time()
    checkpoint = _prepare_folder(accelerator, out_dir, resume, name)
    sampler, train_dl, eval_dl = _loaders(accelerator, train_dataset, eval_dataset, cfg, collate_fn)
    total_steps = cfg.max_steps or cfg.epochs * math.ceil(len(train_dl) / cfg.grad_accum)
    optimizer = _optimizer(model, cfg, fused=fast.fused_adamw(accelerator.device))
    scheduler = _scheduler(optimizer, cfg, total_steps)
    compiled = fast.compile_layers(model, cfg.compile, accelerator.device, name)
    model, optimizer = fsdp.prepare(accelerator, model, optimizer)
    progress = _Progress()
    run = _Run(
        cfg=cfg, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler,
        train_dl=train_dl, eval_dl=eval_dl, progress=progress, compute_loss=compute_loss, count_tokens=count_tokens,
        out_dir=out_dir, name=name, total_steps=total_steps, started=started, compile_untried=compiled,
    )
    if checkpoint is not None:
        _resume_from(run, checkpoint)
        if accelerator.is_main_process:
            print(f"{name}: resuming from {checkpoint} (step {progress.step}, epoch {progress.epoch + 1})", file=sys.stderr)
            truncate_metrics(out_dir / METRICS, progress.step)
    accelerator.wait_for_everyone()
    run.elapsed_before = progress.elapsed
    if checkpoint is None and accelerator.is_main_process:
        shutil.rmtree(out_dir / RUNS, ignore_errors=True)  # the old run's tracker files go with its metrics.jsonl
    if accelerator.log_with and not accelerator.trackers:  # a caller's own trackers are left to the caller
        run.ends_trackers = trackers.start(accelerator, out_dir, name, tracker_config)
    run.pbar = tqdm(total=total_steps, initial=progress.step, desc=name, disable=not accelerator.is_local_main_process, dynamic_ncols=True, mininterval=1.0)
    return run


def _plan_speed(run: _Run, train_dataset, extra_flops: Callable[[int], float] | None) -> None:
    """The model FLOPs of one trained position and the device's peak, for the MFU of the logs."""
    try:
        seq_len = len(train_dataset[0]["input_ids"]) if len(train_dataset) else 0
        run.flops_per_token = speed.training_flops_per_token(run.model, seq_len) + (extra_flops(seq_len) if extra_flops else 0.0)
    except (TypeError, AttributeError, KeyError, IndexError):  # not a transformers model or not blocks: no MFU
        run.flops_per_token = None
    run.peak_tflops = speed.peak_tflops(run.accelerator.device, run.accelerator.mixed_precision)


def _speed(run: _Run, tokens: int, positions: int, seconds: float) -> dict:
    return speed.figures(tokens, positions, seconds, run.flops_per_token, run.peak_tflops, run.accelerator.num_processes)


def _end_trackers(run: _Run) -> None:
    """End the trackers this run started (:func:`distill.trackers.end`), once."""
    if run.ends_trackers:
        trackers.end(run.accelerator)
        run.ends_trackers = False


def _prepare_folder(accelerator, out_dir: Path, resume: bool, name: str) -> Path | None:
    """The checkpoint to resume from; None starts fresh, deleting old checkpoints and metrics."""
    is_main = accelerator.is_main_process
    log = (lambda line: print(line, file=sys.stderr)) if is_main else (lambda line: None)
    # Every process checks the checkpoints itself (the same files, the same answer): no broadcast.
    checkpoint = resume_checkpoint(out_dir, checkpoint_state.FILES, log) if resume else None
    if resume and checkpoint is None and is_main:
        print(f"{name}: no checkpoint in {out_dir / CHECKPOINTS}; starting from scratch", file=sys.stderr)
    if is_main:
        # From here until the final save the folder is unfinished, whatever it held before.
        (out_dir / INFO_FILE).unlink(missing_ok=True)
    if checkpoint is None and is_main:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        (out_dir / METRICS).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return checkpoint


def _loaders(accelerator, train_dataset, eval_dataset, cfg: TrainingConfig, collate_fn):
    """``(sampler, train_dl, eval_dl)``, the loaders prepared (sharded across processes)."""
    sampler = EpochShuffleSampler(len(train_dataset), cfg.seed)
    # Own generators: creating a loader iterator otherwise draws from the global RNG, so a resumed
    # run (which creates one mid-epoch) would shift every later dropout mask.
    workers = fast.num_workers(cfg.num_workers, accelerator.device)
    feed = dict(collate_fn=collate_fn, num_workers=workers, persistent_workers=workers > 0, pin_memory=accelerator.device.type == "cuda")
    train_dl = DataLoader(train_dataset, batch_size=cfg.batch_size, sampler=sampler, generator=torch.Generator().manual_seed(cfg.seed), **feed)
    eval_dl = DataLoader(eval_dataset, batch_size=cfg.batch_size, shuffle=False, generator=torch.Generator().manual_seed(cfg.seed), **feed)
    train_dl, eval_dl = accelerator.prepare(train_dl, eval_dl)
    return sampler, train_dl, eval_dl


def _train_epoch(run: _Run, stop: StopSignal) -> None:
    """Optimizer steps to the end of the current epoch or of the run, from where a resume left off."""
    progress, cfg = run.progress, run.cfg
    run.sampler.set_epoch(progress.epoch)
    loader = run.accelerator.skip_first_batches(run.train_dl, progress.batches_in_epoch) if progress.batches_in_epoch else run.train_dl
    batches = iter(loader)
    while progress.step < run.total_steps:
        started = time.perf_counter()
        window = list(itertools.islice(batches, cfg.grad_accum))
        if not window:  # the loader ran dry early (should not happen): close the epoch anyway
            _end_epoch(run)
            return
        if run.compile_untried:
            run.compile_untried = False
            grad_norm = fast.eager_if_it_fails(lambda: _optimizer_step(run, window), run.name, undo=run.optimizer.zero_grad)
        else:
            grad_norm = _optimizer_step(run, window)
        seconds = time.perf_counter() - started  # the step synchronises (the token count's .item())
        progress.step_time += seconds
        progress.since_log_step_time += seconds
        if progress.step % cfg.log_every == 0 or progress.step == run.total_steps:
            _log_train_row(run, grad_norm)
        run.words.after_step(run)  # before this step's checkpoint: a resume never skips a save_at_words folder
        if progress.batches_in_epoch >= len(run.train_dl):
            _end_epoch(run)
            return
        if cfg.eval_every and progress.step % cfg.eval_every == 0:
            _validate(run)
        _stop_if_signalled(run, stop)
        if cfg.save_every and progress.step % cfg.save_every == 0 and progress.step < run.total_steps:
            _checkpoint(run)


def _optimizer_step(run: _Run, window: list[dict]) -> torch.Tensor | None:
    """One accumulation window -> one optimizer step; returns the grad norm (None: no clipping).

    Raises DistillError, before stepping, when the window's loss or a log is NaN/inf.
    """
    progress, cfg = run.progress, run.cfg
    info = _loss_window(run, window)
    values = _backward(run, window, info)
    if not all(math.isfinite(v) for v in values.values()):
        good = latest_checkpoint(run.out_dir)
        raise DistillError(
            f"{run.name}: training loss became {values['loss']} at step {progress.step + 1} "
            f"(epoch {progress.epoch + 1}); stopped, last good checkpoint: {good or 'none yet'}; "
            f"lower training.lr (now {cfg.lr:g}) or set training.max_grad_norm"
        )
    grad_norm = run.accelerator.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm else None
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    tokens = int(info.num_tokens.item())
    progress.step += 1
    progress.batches_in_epoch += len(window)
    progress.train_tokens += tokens
    for name, value in values.items():
        progress.since_log[name] = progress.since_log.get(name, 0.0) + value * tokens
    progress.since_log_tokens += tokens
    progress.positions += info.num_positions
    progress.since_log_positions += info.num_positions
    run.pbar.update(1)
    return grad_norm


def _loss_window(run: _Run, window: list[dict]) -> LossWindow:
    """The window's target tokens and sequences, summed over its micro-batches and all processes."""
    device = run.accelerator.device
    tokens = torch.stack([run.count_tokens(b).to(device, torch.long) for b in window]).sum()
    sequences = sum(len(b["input_ids"]) for b in window)  # shapes are known on the host: no wait for the device
    positions = sum(b["input_ids"].numel() for b in window)
    if run.accelerator.num_processes > 1:
        totals = run.accelerator.reduce(torch.stack([tokens, torch.tensor(sequences, device=device), torch.tensor(positions, device=device)]), reduction="sum")
        tokens, sequences, positions = totals[0], int(totals[1]), int(totals[2])
    return LossWindow(num_tokens=tokens, num_sequences=sequences, num_micro_batches=len(window), step=run.progress.step + 1,
                      num_positions=positions)


def _backward(run: _Run, window: list[dict], info: LossWindow) -> dict[str, float]:
    """``compute_loss`` and backward for each micro-batch; returns the window's loss and logs
    (each already a share of the window's per-token mean) summed over micro-batches and processes."""
    accelerator, model = run.accelerator, run.model
    scale = accelerator.num_processes * accelerator.gradient_accumulation_steps  # undo DDP's mean and Accelerate's 1/accum
    sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(window):
        # Gradients are all-reduced only on the window's last micro-batch.
        sync = accelerator.no_sync(model) if i < len(window) - 1 else contextlib.nullcontext()
        with sync:
            loss, logs = run.compute_loss(model, batch, info)
            accelerator.backward(loss * scale)
        for name, value in {"loss": loss, **logs}.items():
            value = torch.as_tensor(value, device=accelerator.device).detach().double()
            sums[name] = sums.get(name, 0) + value
    names = list(sums)
    reduced = accelerator.reduce(torch.stack([sums[n] for n in names]), reduction="sum")
    return dict(zip(names, reduced.tolist()))


def _log(run: _Run, row: dict) -> None:
    """One row to ``metrics.jsonl`` (main process) and its numbers to the trackers as ``split/key``
    at the row's step (the names in the module docstring)."""
    if run.accelerator.is_main_process:
        with open(run.out_dir / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
    if run.accelerator.trackers:
        numbers = {f"{row['split']}/{k}": v for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        run.accelerator.log(numbers, step=row["step"])


def _log_train_row(run: _Run, grad_norm: torch.Tensor | None) -> None:
    """The token-weighted means since the last train row, with lr, grad norm, tokens/s, tokens and time."""
    progress = run.progress
    elapsed = run.elapsed()
    row = {"step": progress.step, "epoch": progress.epoch + 1, "split": "train"}
    row.update({n: v / max(progress.since_log_tokens, 1) for n, v in progress.since_log.items()})
    row["lr"] = run.scheduler.get_last_lr()[0]
    if grad_norm is not None:
        row["grad_norm"] = float(grad_norm)
    row.update(_speed(run, progress.since_log_tokens, progress.since_log_positions, progress.since_log_step_time))
    row["tokens"] = progress.train_tokens
    row["elapsed_s"] = round(elapsed, 2)
    _log(run, row)
    postfix = {"loss": f"{row['loss']:.3f}", "tok/s": f"{row['tokens_per_s']:,.0f}"}
    if "mfu" in row:
        postfix["mfu"] = f"{100 * row['mfu']:.1f}%"
    run.pbar.set_postfix(postfix)
    run.last_train_loss = row["loss"]
    progress.since_log, progress.since_log_tokens, progress.since_log_positions, progress.since_log_step_time = {}, 0, 0, 0.0


def _validate(run: _Run) -> dict:
    """CE and perplexity on the eval set, logged as a ``val`` row and kept as ``progress.last_val``."""
    loss, ppl, tokens = evaluate_loss(run.model, run.eval_dl, run.accelerator)
    progress = run.progress
    row = {"step": progress.step, "epoch": progress.epoch + 1, "split": "val", "loss": loss, "ppl": ppl, "tokens": tokens}
    _log(run, row)
    progress.last_val = row
    return row


def _end_epoch(run: _Run) -> None:
    _validate(run)
    run.progress.epoch += 1
    run.progress.batches_in_epoch = 0


def _checkpoint(run: _Run) -> Path:
    """Save ``checkpoints/step-N`` (every process takes part); the progress records the time so far."""
    run.progress.elapsed = run.elapsed()

    def write(folder: Path) -> None:
        checkpoint_state.write_state(folder, run.accelerator, model=run.model, optimizer=run.optimizer,
                                     scheduler=run.scheduler, progress=run.progress)

    return save_checkpoint(run.accelerator, run.out_dir / CHECKPOINTS, run.progress.step, run.cfg.keep_checkpoints, write)


def _resume_from(run: _Run, checkpoint: Path) -> None:
    """Load an intact checkpoint; one that does not fit this model or optimizer is a one-line error."""
    try:
        checkpoint_state.read_state(checkpoint, run.accelerator, model=run.model, optimizer=run.optimizer,
                                    scheduler=run.scheduler, progress=run.progress)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise DistillError(f"{checkpoint}: does not fit this run ({reason}); resume with the settings it was "
                           "saved with, or start over with --force") from None


def _stop_if_signalled(run: _Run, stop: StopSignal) -> None:
    """After a SIGTERM/SIGINT on any process: every process saves a checkpoint, then TrainingInterrupted."""
    if stop.signum is not None:
        run.accelerator.set_trigger()
    if run.accelerator.check_trigger():
        path = _checkpoint(run)
        run.pbar.close()
        raise TrainingInterrupted(
            f"{run.name}: stopped by a signal at step {run.progress.step}/{run.total_steps}; "
            f"checkpoint saved to {path}; continue with --resume",
            path,
        )


def _finish(run: _Run, tokenizer, info: ModelInfo, generate: GenerateConfig | None = None) -> dict:
    """Validate at the last step (unless just done), end the trackers, write the final folder."""
    progress, accelerator = run.progress, run.accelerator
    if progress.last_val.get("step") != progress.step:
        _validate(run)
    _end_trackers(run)  # before the folder is rebuilt: the tracker files it keeps must be complete
    val = progress.last_val
    world = accelerator.num_processes
    metrics = {
        "val_loss": val["loss"],
        "val_ppl": val["ppl"],
        "train_loss": run.last_train_loss,
        "steps": progress.step,
        "epochs": round(progress.epoch + progress.batches_in_epoch / max(len(run.train_dl), 1), 3),
        "train_tokens": progress.train_tokens,
        "wall_time_s": round(run.elapsed(), 1),
        "num_processes": world,
        "effective_batch_size": run.cfg.batch_size * run.cfg.grad_accum * world,
        **_speed(run, progress.train_tokens, progress.positions, progress.step_time),
        **({"model_flops_per_token": round(run.flops_per_token)} if run.flops_per_token else {}),
        **run.words.final_metrics(progress.train_tokens),
    }
    if torch.cuda.is_available():
        metrics["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    _save_final(accelerator, run.model, run.out_dir, tokenizer, info, metrics, generate)
    return metrics


def _save_final(accelerator, model, out_dir: Path, tokenizer, info: ModelInfo, metrics: dict,
                generate: GenerateConfig | None = None) -> None:
    """Rebuild ``out_dir`` as the finished model folder (:func:`distill.model_card.save_model_folder`),
    merged around files that are not a model folder's; its card's samples follow ``generate``."""
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        final = dataclasses.replace(info, metrics={**info.metrics, **metrics})
        save_model_folder(out_dir, fsdp.model_to_save(accelerator, model, state_dict), tokenizer, final, state_dict=state_dict, generate=generate)
    accelerator.wait_for_everyone()
