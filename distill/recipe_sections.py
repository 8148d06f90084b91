"""The sections of a recipe (:mod:`distill.recipe`): one typed dataclass each, with its value checks.

Each field carries its default and a comment that ``docs/`` and the recipes repeat; ``problems(key,
recipe)`` returns the checks beyond types as ``key: message`` lines. :mod:`distill.recipe`
re-exports every section, so ``from distill.recipe import StudentConfig`` is the import to use.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from distill.counts import format_count
from distill.typed_config import INVALID, did_you_mean, is_valid, to_plain

Arch = Literal["llama", "gpt2"]
Scheduler = Literal["cosine", "linear", "constant"]
MixedPrecision = Literal["no", "bf16", "fp16"]
Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
Ensemble = Literal["logits", "probs"]
KLReduction = Literal["token_mean", "legacy_batchmean"]
CacheMethod = Literal["topk_tail", "sampled"]
MAX_CACHE_SAMPLES = 255  # distill.logit_sampling.MAX_SAMPLES: counts are stored as uint8
SplitName = Literal["train", "val", "test"]
Decoding = Literal["greedy", "recipe"]

if typing.TYPE_CHECKING:
    from distill.losses import LossConfig
    from distill.recipe import Recipe


class _Section:
    """Shared behaviour of every recipe section."""

    def to_dict(self) -> dict[str, Any]:
        """The section as plain YAML/JSON-ready data (paths as strings, internal fields left out)."""
        return to_plain(self)

    def problems(self, key: str, recipe: "Recipe | None" = None) -> list[str]:
        """Value checks beyond types, as ``key: message`` lines (empty when all is well)."""
        return []


_S = typing.TypeVar("_S", bound=_Section)

MAX_TRAINING_SEED = 2**32 - 1  # accelerate's set_seed seeds numpy too, which takes 0 .. 2**32 - 1
MAX_SAMPLING_SEED = 2**64 - 1  # torch.manual_seed takes at most 2**64 - 1


def seed_problems(key: str, seed: Any, highest: int) -> list[str]:
    """``[key: message]`` when ``seed`` is outside ``0 .. highest``, else ``[]``."""
    if is_valid(seed) and not 0 <= seed <= highest:
        return [f"{key}: {seed} is out of range; give a seed from 0 to {highest}"]
    return []


@dataclass(kw_only=True)
class CorpusConfig(_Section):
    source: Path  # folder of per-article files the corpus stage reads (the shipped sample by default)
    train_words: int  # word budget of the train split (accepts 400_000, "500k", "10M")
    val_words: int  # word budget of the validation split
    test_words: int  # word budget of the test split
    seed: int = 0  # seed of the article shuffle that assigns articles to splits
    facts: Optional[Path] = None  # optional JSONL of invented facts injected into train
    fact_repeats: int = 0  # how many times each fact is injected

    def problems(self, key, recipe=None):
        out = []
        for name in ("train_words", "val_words", "test_words"):
            value = getattr(self, name)
            if is_valid(value) and value <= 0:
                out.append(f"{key}.{name}: {value} must be positive; give a word budget such as 400_000 or 10M")
        if is_valid(self.fact_repeats) and self.fact_repeats < 0:
            out.append(f"{key}.fact_repeats: {self.fact_repeats} must be 0 or more")
        return out


@dataclass(kw_only=True)
class TokenizerConfig(_Section):
    vocab_size: int  # BPE vocabulary size including <pad>, <s>, </s> and the 256 byte tokens
    min_frequency: int = 2  # a merge needs a pair seen at least this often in train

    def problems(self, key, recipe=None):
        out = []
        if is_valid(self.vocab_size) and self.vocab_size < 259:
            out.append(f"{key}.vocab_size: {self.vocab_size} is below 259 (256 byte tokens + 3 specials); pick 259 or more")
        if is_valid(self.min_frequency) and self.min_frequency < 1:
            out.append(f"{key}.min_frequency: {self.min_frequency} must be 1 or more")
        return out


@dataclass(kw_only=True)
class DataConfig(_Section):
    seq_len: int = 128  # tokens per training block (the models' context during training)

    def problems(self, key, recipe=None):
        if is_valid(self.seq_len) and self.seq_len < 2:
            return [f"{key}.seq_len: {self.seq_len} must be 2 or more"]
        return []


MAX_WORKERS = 64  # DataLoader worker processes per training process: more only costs memory and start-up


@dataclass(kw_only=True)
class TrainingConfig(_Section):
    epochs: int = 1  # passes over the train blocks
    max_steps: Optional[int] = None  # stop after this many optimizer steps (overrides epochs when set)
    batch_size: int = 16  # blocks per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = batch_size * grad_accum * processes)
    lr: float = 3e-4  # peak learning rate of AdamW
    weight_decay: float = 0.01  # AdamW weight decay (never applied to norms, biases or embeddings' bias)
    warmup_steps: int = 0  # linear warmup steps before the schedule
    scheduler: Scheduler = "cosine"  # learning-rate schedule after warmup: cosine | linear | constant
    seed: int = 0  # seed of initialisation, data order and dropout
    mixed_precision: Optional[MixedPrecision] = None  # no | bf16 | fp16; null = the accelerate config's choice
    save_every: int = 500  # save a resumable checkpoint every this many optimizer steps (0 = only on SIGTERM)
    keep_checkpoints: int = 2  # how many recent checkpoints to keep during training
    log_every: int = 10  # write a train row to metrics.jsonl every this many optimizer steps
    eval_every: Optional[int] = None  # also validate every this many steps (always at the end of each epoch)
    max_grad_norm: Optional[float] = 1.0  # gradient clipping norm; null or 0 = no clipping
    compile: Union[bool, str] = "auto"  # torch.compile each transformer layer: auto (on for CUDA, off on CPU) | true | false; falls back to eager, with a warning, where it does not work
    num_workers: Optional[int] = None  # DataLoader worker processes that read the blocks (and the logit cache); null = auto (4 on CUDA, 0 on CPU)
    log_with: Optional[Union[str, list[str]]] = None  # experiment tracker(s) through Accelerate: tensorboard, wandb, mlflow, trackio, ... or a list of them; null = none
    save_at_words: list[int] = field(default_factory=list)  # also save the model at these counts of train words seen, e.g. [1M, 2M, 5M], into <model>/words/<count>/ (distill/words_seen.py); [] = none

    def problems(self, key, recipe=None):
        out = save_at_words_problems(f"{key}.save_at_words", self.save_at_words)
        positive = ("epochs", "batch_size", "grad_accum", "log_every", "keep_checkpoints")
        for name in positive:
            value = getattr(self, name)
            if is_valid(value) and value < 1:
                out.append(f"{key}.{name}: {value} must be 1 or more")
        for name in ("max_steps", "eval_every"):
            value = getattr(self, name)
            if is_valid(value) and value is not None and value < 1:
                out.append(f"{key}.{name}: {value} must be 1 or more, or null")
        if is_valid(self.compile) and self.compile not in (True, False, "auto"):
            out.append(f"{key}.compile: {self.compile!r} is not one of auto | true | false")
        if is_valid(self.num_workers) and self.num_workers is not None and not 0 <= self.num_workers <= MAX_WORKERS:
            out.append(f"{key}.num_workers: {self.num_workers} must be 0 (read in the training process) to {MAX_WORKERS}, or null for auto")
        for name in ("warmup_steps", "save_every"):
            value = getattr(self, name)
            if is_valid(value) and value < 0:
                out.append(f"{key}.{name}: {value} must be 0 or more")
        if is_valid(self.lr) and not self.lr > 0:
            out.append(f"{key}.lr: {self.lr} must be positive; try 3e-4")
        if is_valid(self.weight_decay) and self.weight_decay < 0:
            out.append(f"{key}.weight_decay: {self.weight_decay} must be 0 or more")
        if is_valid(self.max_grad_norm) and self.max_grad_norm is not None and self.max_grad_norm < 0:
            out.append(f"{key}.max_grad_norm: {self.max_grad_norm} must be positive, or null for no clipping")
        out += seed_problems(f"{key}.seed", self.seed, MAX_TRAINING_SEED)
        out += tracker_problems(f"{key}.log_with", self.log_with)
        return out


def save_at_words_problems(key: str, counts: Any) -> list[str]:
    """``save_at_words`` must list positive word counts, each once, from small to large."""
    if not is_valid(counts) or not all(is_valid(count) for count in counts):
        return []  # the type check has said what is wrong
    example = "e.g. save_at_words: [1M, 2M, 5M, 10M]"
    shown = "[" + ", ".join(format_count(c) if c > 0 else str(c) for c in counts) + "]"
    if bad := [count for count in counts if count <= 0]:
        return [f"{key}: {bad[0]} in {shown} is not positive; give counts of words seen, {example}"]
    if len(set(counts)) < len(counts):
        twice = sorted({format_count(c) for c in counts if counts.count(c) > 1})
        return [f"{key}: {shown} lists {', '.join(twice)} more than once; give each count once, {example}"]
    if counts != sorted(counts):
        return [f"{key}: {shown} is not in increasing order; list the counts from small to large: "
                f"[{', '.join(format_count(c) for c in sorted(counts))}]"]
    return []


def tracker_problems(key: str, log_with: Any) -> list[str]:
    """``log_with`` checked against the trackers the installed Accelerate knows, so that one it adds
    needs no change here. A known tracker whose package is missing passes: training warns and goes on
    without it (:func:`distill.distributed.installed_trackers` says why)."""
    if log_with is None:
        return []
    names = [log_with] if isinstance(log_with, str) else log_with
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return [f"{key}: expected a tracker name or a list of them, got {log_with!r}; e.g. log_with: tensorboard or log_with: [tensorboard, wandb]"]
    # Imported only when a tracker is asked for: accelerate brings torch, which most commands never need.
    from distill.distributed import tracker_names

    valid = tracker_names()
    out = []
    for name in names:
        if name not in valid:
            hint = did_you_mean(name, valid)
            if "did you mean" in hint:
                hint += f" (valid: {', '.join(valid)})"
            out.append(f"{key}: {name!r} is not a tracker Accelerate supports{hint}")
    return out


@dataclass(kw_only=True)
class ModelConfig(_Section):
    name: str  # folder name of this model under the recipe's output_dir
    arch: Arch  # llama (LlamaForCausalLM) | gpt2 (GPT2LMHeadModel)
    hidden_size: int  # width of the residual stream
    num_layers: int  # transformer blocks
    num_heads: int  # attention heads; hidden_size must be a multiple of it
    intermediate_size: Optional[int] = None  # MLP width; required for llama, gpt2 defaults to 4 * hidden_size
    num_kv_heads: Optional[int] = None  # llama only: key/value heads for grouped-query attention (null = num_heads)
    tie_embeddings: Optional[bool] = None  # share input and output embeddings; null = arch default (llama no, gpt2 yes)
    dropout: Optional[float] = None  # dropout probability; null = arch default (gpt2 0.1 on residual, embedding and attention; llama 0.0)
    training: TrainingConfig = field(default_factory=TrainingConfig)  # optimisation settings of this model

    def __post_init__(self):
        if self.intermediate_size is None and self.arch == "gpt2" and is_valid(self.hidden_size):
            self.intermediate_size = 4 * self.hidden_size

    def problems(self, key, recipe=None):
        out = []
        if is_valid(self.name) and not _SAFE_NAME.fullmatch(self.name or ""):
            out.append(f"{key}.name: {self.name!r} is not a safe folder name; use letters, digits, '-', '_' or '.'")
        for name in ("hidden_size", "num_layers", "num_heads"):
            value = getattr(self, name)
            if is_valid(value) and value < 1:
                out.append(f"{key}.{name}: {value} must be 1 or more")
        if is_valid(self.hidden_size, self.num_heads) and self.hidden_size >= 1 and self.num_heads >= 1:
            if self.hidden_size % self.num_heads:
                out.append(
                    f"{key}.hidden_size: {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                    f"pick a multiple of {self.num_heads}"
                )
        if is_valid(self.intermediate_size, self.arch, self.hidden_size):
            if self.intermediate_size is None:
                out.append(
                    f"{key}.intermediate_size: missing; llama needs the MLP width, "
                    f"e.g. intermediate_size: {3 * self.hidden_size} (3 * hidden_size)"
                )
            elif self.intermediate_size < 1:
                out.append(f"{key}.intermediate_size: {self.intermediate_size} must be 1 or more")
        if is_valid(self.num_kv_heads, self.arch, self.num_heads) and self.num_kv_heads is not None:
            if self.arch == "gpt2":
                out.append(f"{key}.num_kv_heads: gpt2 has no grouped-query attention; remove num_kv_heads")
            elif self.num_kv_heads < 1 or (self.num_heads >= 1 and self.num_heads % self.num_kv_heads):
                out.append(
                    f"{key}.num_kv_heads: {self.num_kv_heads} must divide num_heads {self.num_heads}; "
                    f"pick a divisor of {self.num_heads}"
                )
        if is_valid(self.dropout) and self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            out.append(f"{key}.dropout: {self.dropout} must be in [0, 1), or null for the arch default")
        if isinstance(self.training, TrainingConfig):
            out += self.training.problems(f"{key}.training", recipe)
        return out


@dataclass(kw_only=True)
class LogitCacheConfig(_Section):
    enabled: bool = False  # run the teacher ensemble once and train every epoch from stored sparse targets
    method: CacheMethod = "sampled"  # sampled (samples draws per position; unbiased, forward_kl only) | topk_tail (top_k log-probs + tail mass; biased)
    top_k: int = 64  # method topk_tail: tokens stored per position (plus the tail mass); 4k+4 bytes per token
    samples: int = 64  # method sampled: draws per position from the teachers' distribution, 1..255; 3 bytes each (bench/RESULTS.md: 64 is within 1% of live teachers)
    dir: Optional[Path] = None  # where the cache lives; null = {output_dir}/teacher_logits

    def problems(self, key, recipe=None):
        out = []
        if is_valid(self.samples) and not 1 <= self.samples <= MAX_CACHE_SAMPLES:
            out.append(f"{key}.samples: {self.samples} must be between 1 and {MAX_CACHE_SAMPLES} (counts are stored as uint8), e.g. 12")
        if is_valid(self.top_k) and self.top_k < 1:
            out.append(f"{key}.top_k: {self.top_k} must be 1 or more")
        elif (
            recipe is not None
            and isinstance(recipe.tokenizer, TokenizerConfig)
            and is_valid(self.top_k, recipe.tokenizer.vocab_size)
            and self.top_k > recipe.tokenizer.vocab_size
        ):
            out.append(
                f"{key}.top_k: {self.top_k} is larger than tokenizer.vocab_size {recipe.tokenizer.vocab_size}; "
                f"pick at most {recipe.tokenizer.vocab_size}"
            )
        return out


@dataclass(kw_only=True)
class StudentConfig(ModelConfig):
    name: str = "student"  # name in the student's distill.json (its folder is always student/, the baseline's baseline/)
    alpha: float = 0.5  # loss = alpha * CE + (1 - alpha) * KL
    temperature: float = 2.0  # KD loss temperature (not the sampling one)
    divergence: Divergence = "forward_kl"  # forward_kl | reverse_kl | jsd
    ensemble: Ensemble = "logits"  # logits (mean of teacher logits, BabyLlama's) | probs (mean of probabilities)
    teacher_weights: Optional[list[float]] = None  # optional per-teacher weights, same order as teachers
    kl_reduction: KLReduction = "token_mean"  # token_mean | legacy_batchmean (BabyLlama's, ~seq_len x heavier KL)
    chunk_size: int = 1024  # tokens per chunk in the fused lm_head + loss
    baseline: bool = True  # also train the same student with alpha=1 (no distillation) for comparison
    facts_in_train: bool = True  # false: the student and the baseline train on the train split without the injected corpus.facts, so the facts are only in the teachers' data
    logit_cache: LogitCacheConfig = field(default_factory=LogitCacheConfig)  # optional teacher-logit cache

    @property
    def uses_teachers(self) -> bool:
        """Whether the loss has a KD term (alpha < 1) and so needs teachers; alpha == 1 is plain CE."""
        return self.alpha < 1

    def as_baseline(self) -> "StudentConfig":
        """The no-distillation baseline of this student: the same section with ``alpha = 1`` (plain CE)."""
        return dataclasses.replace(self, alpha=1.0)

    @property
    def loss(self) -> "LossConfig":
        """The loss settings as a checked :class:`distill.losses.LossConfig`."""
        # Imported here, not at the top: distill.losses needs torch, and every command imports this
        # module (the corpus stage and --help too); only the stages that compute a loss pay for torch.
        from distill.losses import LossConfig

        weights = tuple(self.teacher_weights) if self.teacher_weights is not None else None
        return LossConfig(alpha=self.alpha, temperature=self.temperature, divergence=self.divergence, ensemble=self.ensemble,
                          teacher_weights=weights, kl_reduction=self.kl_reduction, chunk_size=self.chunk_size)

    def problems(self, key, recipe=None):
        out = super().problems(key, recipe)
        if is_valid(self.alpha) and not 0.0 <= self.alpha <= 1.0:
            out.append(f"{key}.alpha: {self.alpha} must be between 0 and 1 (1 = plain CE, no distillation)")
        if is_valid(self.temperature) and not self.temperature > 0:
            out.append(f"{key}.temperature: {self.temperature} must be positive; BabyLlama uses 2.0")
        if is_valid(self.chunk_size) and self.chunk_size < 1:
            out.append(f"{key}.chunk_size: {self.chunk_size} must be 1 or more")
        if is_valid(self.teacher_weights) and self.teacher_weights is not None:
            weights = self.teacher_weights
            if recipe is not None and isinstance(recipe.teachers, list) and len(weights) != len(recipe.teachers):
                out.append(
                    f"{key}.teacher_weights: {len(weights)} weights for {len(recipe.teachers)} teachers; "
                    f"give one weight per teacher, in the order of teachers, or null"
                )
            if any(w is INVALID for w in weights):
                pass
            elif any(w < 0 for w in weights) or not sum(weights) > 0:
                out.append(f"{key}.teacher_weights: {weights} must be non-negative with a positive sum")
        if isinstance(self.logit_cache, LogitCacheConfig):
            out += self.logit_cache.problems(f"{key}.logit_cache", recipe)
            cache = self.logit_cache
            sampled = is_valid(cache.enabled, cache.method) and cache.enabled and cache.method == "sampled"
            if sampled and is_valid(self.divergence) and self.divergence != "forward_kl":  # unbiased for forward KL only
                out.append(
                    f"{key}.logit_cache.method: sampled is an unbiased target for forward_kl only, but {key}.divergence is "
                    f"{self.divergence}; set {key}.divergence=forward_kl or {key}.logit_cache.method=topk_tail"
                )
        return out


@dataclass(kw_only=True)
class GenerateConfig(_Section):
    prompts: list[str] = field(default_factory=lambda: ["London was"])  # prompts sampled after training
    max_new_tokens: int = 60  # tokens generated per prompt
    temperature: float = 0.8  # sampling temperature (0 = greedy decoding)
    top_k: int = 50  # sample among the k most likely tokens (0 = no limit)
    top_p: float = 0.95  # nucleus sampling mass (1.0 = no limit)
    repetition_penalty: float = 1.1  # >1 discourages repeating tokens
    seed: int = 0  # sampling seed

    def problems(self, key, recipe=None):
        out = []
        if is_valid(self.max_new_tokens) and self.max_new_tokens < 1:
            out.append(f"{key}.max_new_tokens: {self.max_new_tokens} must be 1 or more")
        if is_valid(self.prompts) and (not self.prompts or not all(is_valid(p) and p.strip() for p in self.prompts)):
            out.append(f"{key}.prompts: {self.prompts} must be a list of non-empty prompts, e.g. [\"London was\"]")
        if is_valid(self.temperature) and self.temperature < 0:
            out.append(f"{key}.temperature: {self.temperature} is negative; use 0 for greedy decoding or a positive value such as 0.8")
        if is_valid(self.top_k) and self.top_k < 0:
            out.append(f"{key}.top_k: {self.top_k} must be 0 (no limit) or more")
        if is_valid(self.top_p) and not 0 < self.top_p <= 1:
            out.append(f"{key}.top_p: {self.top_p} must be in (0, 1]")
        if is_valid(self.repetition_penalty) and not self.repetition_penalty > 0:
            out.append(f"{key}.repetition_penalty: {self.repetition_penalty} must be positive (1.0 = none)")
        out += seed_problems(f"{key}.seed", self.seed, MAX_SAMPLING_SEED)
        return out


@dataclass(kw_only=True)
class GenerationEvalConfig(_Section):
    enabled: bool = True  # generate from every model and score the text (distill/generation_eval.py)
    test_openings: int = 8  # prompts: generate.prompts plus the openings of this many test-split articles
    opening_words: int = 5  # words of each article's opening used as a prompt
    max_new_tokens: int = 64  # tokens generated per prompt
    decoding: Decoding = "greedy"  # greedy (temperature 0, no repetition penalty) | recipe (the generate: sampling settings and seed)
    judge: Optional[Path] = None  # model folder that scores the texts' perplexity; null = the teacher with the lowest val ppl

    def problems(self, key, recipe=None):
        out = []
        if is_valid(self.test_openings) and self.test_openings < 0:
            out.append(f"{key}.test_openings: {self.test_openings} must be 0 or more (0 = only generate.prompts)")
        for name in ("opening_words", "max_new_tokens"):
            value = getattr(self, name)
            if is_valid(value) and value < 1:
                out.append(f"{key}.{name}: {value} must be 1 or more")
        return out


@dataclass(kw_only=True)
class EvaluateConfig(_Section):
    splits: list[SplitName] = field(default_factory=lambda: ["val", "test"])  # corpus splits scored for perplexity
    blimp_dir: Optional[Path] = None  # folder of BLiMP-format JSONL files (null = skip minimal pairs)
    facts: Optional[Path] = None  # JSONL of fact probes; null = corpus.facts
    generation: GenerationEvalConfig = field(default_factory=GenerationEvalConfig)  # generated-text quality (rep-3, distinct-n, judge ppl)

    def problems(self, key, recipe=None):
        return self.generation.problems(f"{key}.generation", recipe) if isinstance(self.generation, GenerationEvalConfig) else []


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
