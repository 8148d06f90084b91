"""Distil a small student from the teacher ensemble: ``distill.Student`` and the student stage.

    accelerate launch -m distill.student recipes/tiny.yaml [key=value ...] [--only student|baseline]
                                                          [--baseline] [--resume] [--force]
    python -m distill.student recipes/tiny.yaml           # the same, one process

The stage trains the recipe's student into ``{output_dir}/student`` with the blended loss
``alpha * CE + (1 - alpha) * T^2 * KL(teachers || student)`` (:mod:`distill.losses`) and, when
``student.baseline`` is true (or with ``--baseline``), the same student with ``alpha = 1`` (plain
CE, no teachers) into ``{output_dir}/baseline``: same model, data order, steps and seed, so their
validation perplexities compare distillation against no distillation. A finished folder made with
the same tokenizer and teachers is skipped unless ``--force``; a run stopped by SIGTERM saves a
checkpoint and exits 143, and ``--resume`` continues it exactly.

The teachers (:mod:`distill.ensemble`) run frozen (``eval()``, ``no_grad``) next to the student on
every process, or, with ``student.logit_cache.enabled: true``, once before training into a sparse
cache (:mod:`distill.logit_cache`: top-k + tail, or sampled) that every epoch then reads instead
(several times faster when the teachers are much larger than the student; see bench/RESULTS.md).
The loss of one step is :mod:`distill.kd`.

From Python::

    from distill import Student

    student = Student.from_recipe("recipes/tiny.yaml", alpha=0.7)   # teachers and tokenizer of the recipe
    metrics = student.distill()                                       # the recipe's train / val splits
    print(metrics["val_ppl"], student.generate("London was"))
    student.save("my-student")
    again = Student.load("my-student")
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import json
from pathlib import Path
from typing import Any, Sequence

from accelerate.utils import set_seed

from distill.artifacts import ModelInfo, is_finished, manifest_sha256, must_make, read_info, refuse_unfinished
from distill.cli import add_peak_option, load, parse, recipe_parser
from distill.corpus.facts import train_split_without_facts
from distill.data import IndexedBlocks, as_blocks
from distill.distributed import distributed_state, make_accelerator
from distill.ensemble import TeacherEnsemble, cached_target, live_target
from distill.errors import DistillError, cli_entry
from distill.fast import CachedTargets, cache_build_batch, compile_layers
from distill.folder_lock import locks_output_dir
from distill.generate import generate as generate_text, trained_context
from distill.kd import KDStep, ce_step
from distill.logit_cache import TeacherLogitCache
from distill.losses import LossConfig
from distill.model_card import save_model_folder
from distill.model_folder import load_model
from distill.models import build_model as init_model
from distill.recipe import Recipe, StudentConfig, default_output_dir, load_recipe, section_from_dict
from distill.speed import forward_flops_per_token
from distill.tokenizer import load_tokenizer, require_current
from distill.training import count_target_tokens, train as run_training
from distill.words_seen import train_words_of

# Top-level recipe keys: an override starting with one of them is used as it is; any other key is
# a student setting (``alpha=0.7`` means ``student.alpha=0.7``).
_RECIPE_KEYS = {f.name for f in dataclasses.fields(Recipe)}


def _override_strings(overrides: dict[str, Any]) -> list[str]:
    """``{"alpha": 0.7, "training__lr": 1e-3, "data.seq_len": 64}`` -> recipe ``key=value`` strings."""
    out = []
    for key, value in overrides.items():
        key = key.replace("__", ".")
        if key.split(".")[0].split("[")[0] not in _RECIPE_KEYS:
            key = f"student.{key}"
        out.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return out


def _section_of(model) -> dict:
    """A student section describing a plain transformers model (a folder without a saved recipe)."""
    config = model.config
    return {
        "arch": getattr(config, "model_type", "llama"),
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "intermediate_size": getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
    }


class Student:
    """A small causal LM distilled from an ensemble of teachers.

    Args:
        config: the recipe's ``student`` section (a :class:`~distill.recipe.StudentConfig` or a dict
            with its keys: arch, hidden_size, num_layers, num_heads, intermediate_size, alpha,
            temperature, divergence, ensemble, teacher_weights, kl_reduction, chunk_size,
            logit_cache, training).
        teachers: model folders (anything ``AutoModelForCausalLM.from_pretrained`` loads, e.g. the
            teachers of a recipe or any other causal LM trained with the same tokenizer) or loaded
            ``transformers`` models; kept as a :class:`~distill.ensemble.TeacherEnsemble` in
            ``self.teachers``. Needed by :meth:`distill` unless ``config.alpha == 1``.
        tokenizer: a tokenizer folder or a loaded ``transformers`` tokenizer. Every teacher folder
            must have the same one (compared by :func:`distill.artifacts.tokenizer_sha256`).
        seq_len: tokens per training block (the recipe's ``data.seq_len``).
        vocab_size: rows of the student's embedding (default: the teachers' size, else the
            tokenizer's length).
        output_dir: where :meth:`distill` writes the finished folder (default ``models/<name>``).
        cache_dir: where tokenized blocks of text splits are cached (default ``<output_dir>/../tokens``).
        logit_cache_dir: where the teacher-logit cache lives when ``logit_cache.enabled`` (default
            ``logit_cache.dir`` or ``<output_dir>/../teacher_logits``).
        role: ``"student"`` or ``"baseline"`` (written to ``distill.json``).
        recipe: the recipe the student comes from (:meth:`from_loaded_recipe` sets it); :meth:`distill`
            then defaults to its splits and records its corpus manifest.

    Example::

        student = Student({"arch": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 2,
                           "intermediate_size": 192, "alpha": 0.5, "temperature": 2.0},
                          teachers=["models/tiny/teachers/llama", "models/tiny/teachers/gpt2"],
                          tokenizer="models/tiny/tokenizer", seq_len=128, output_dir="models/mine")
        student.distill("models/tiny/corpus/train.txt", "models/tiny/corpus/val.txt")
        print(student.generate("London was", max_new_tokens=40))
    """

    def __init__(
        self,
        config: StudentConfig | dict,
        teachers: Sequence[str | Path | Any] = (),
        tokenizer: str | Path | Any = None,
        *,
        seq_len: int = 128,
        vocab_size: int | None = None,
        output_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        logit_cache_dir: str | Path | None = None,
        role: str = "student",
        recipe: Recipe | None = None,
    ):
        if isinstance(config, dict):
            config = section_from_dict(StudentConfig, config, "student")
        elif problems := config.problems("student"):
            raise DistillError("; ".join(problems))
        if tokenizer is None:
            raise DistillError("Student: tokenizer is missing; pass the tokenizer folder the teachers were trained with")
        self.config = config
        self.recipe = recipe
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        self.teachers = TeacherEnsemble(teachers, self.tokenizer, vocab_size)
        if self.teachers:
            self.teachers.check(config.loss)
        self.tokenizer_sha256 = self.teachers.tokenizer_sha256
        self.vocab_size = self.teachers.vocab_size
        self.seq_len = int(seq_len)
        self.role = role
        self.output_dir = Path(output_dir) if output_dir is not None else default_output_dir(config.name)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.output_dir.parent / "tokens"
        default_cache = config.logit_cache.dir or self.output_dir.parent / "teacher_logits"
        self.logit_cache_dir = Path(logit_cache_dir) if logit_cache_dir is not None else Path(default_cache)
        self.model = None
        self.info = ModelInfo()  # distill.json of the finished folder, once there is one
        self.metrics: dict = {}

    @classmethod
    def from_recipe(cls, path: str | Path, *overrides: str, baseline: bool = False, **kw_overrides) -> "Student":
        """The student of a recipe, with the recipe's teachers, tokenizer and folders.

        Overrides are recipe ``key=value`` strings (``"student.alpha=0.7"``) or keyword arguments;
        a keyword that is not a top-level recipe key is a student setting, and ``__`` separates
        levels: ``Student.from_recipe("recipes/tiny.yaml", alpha=0.7, training__lr=1e-3)``.
        ``baseline=True`` gives the no-distillation baseline (``alpha = 1``, folder ``baseline/``).
        """
        recipe = load_recipe(path, [*overrides, *_override_strings(kw_overrides)])
        return cls.from_loaded_recipe(recipe, baseline=baseline)

    @classmethod
    def from_loaded_recipe(cls, recipe: Recipe, *, baseline: bool = False) -> "Student":
        """:meth:`from_recipe` for a recipe already loaded (:func:`distill.recipe.load_recipe`)."""
        config = recipe.student.as_baseline() if baseline else copy.deepcopy(recipe.student)
        paths = recipe.paths
        teachers = _trained_teachers(recipe) if config.uses_teachers else []
        if not (paths.tokenizer / "tokenizer.json").is_file():
            raise DistillError(
                f"{paths.tokenizer}: no tokenizer yet; train it with python -m distill.tokenizer {recipe.command_hint()}"
            )
        return cls(
            config, teachers, paths.tokenizer, seq_len=recipe.data.seq_len, vocab_size=recipe.tokenizer.vocab_size,
            output_dir=paths.baseline if baseline else paths.student, cache_dir=paths.tokens,
            logit_cache_dir=paths.teacher_logits, role="baseline" if baseline else "student", recipe=recipe,
        )  # fmt: skip

    def teacher_hashes(self) -> list[str]:
        """sha256 identity of each teacher (folder: config + weights; module: its parameters)."""
        return self.teachers.hashes()

    def release_teachers(self) -> None:
        """Drop teachers loaded from folders (they are reloaded when needed)."""
        self.teachers.release()

    def build_model(self):
        """A freshly initialised student (seeded by ``training.seed``)."""
        set_seed(self.config.training.seed)
        self.model = init_model(self.config, self.vocab_size, self.seq_len)
        return self.model

    def blocks(self, data):
        """Training blocks from a ``datasets.Dataset`` with ``input_ids``, a split file or a list of texts."""
        return as_blocks(data, self.tokenizer, self.seq_len, self.cache_dir)

    def recipe_train_split(self) -> Path:
        """The recipe's train split, or, with ``facts_in_train: false``, a copy without the facts
        that the corpus stage injected (``manifest.json`` names them), so that a fact can reach the
        student only through its teachers. The copy lives in the recipe's token cache folder."""
        if self.recipe is None:
            raise DistillError("Student.recipe_train_split: this student has no recipe; make it with Student.from_recipe")
        paths = self.recipe.paths
        return paths.split("train") if self.config.facts_in_train else train_split_without_facts(paths)

    def distill(self, train=None, eval=None, *, resume: bool = False, accelerator=None) -> dict:
        """Train the student (or, with ``alpha == 1``, the baseline) and write its folder.

        ``train`` / ``eval``: block datasets, split files or lists of texts (default: the recipe's
        train and val splits when made by :meth:`from_recipe`). ``resume`` continues from the newest
        checkpoint in ``output_dir``. Returns the final metrics (``val_loss``, ``val_ppl``, ``steps``,
        ...), which also go to ``output_dir/distill.json``.
        """
        loss = self.config.loss
        if loss.uses_teachers:
            self.teachers.check(loss)
        if self.recipe is not None:
            train = self.recipe_train_split() if train is None else train
            eval = self.recipe.paths.split("val") if eval is None else eval
        if eval is None:
            raise DistillError("Student.distill: no validation data; pass eval= (a split file, texts or blocks)")
        with distributed_state().main_process_first():
            train_blocks, eval_blocks = self.blocks(train), self.blocks(eval)
        accelerator = accelerator or make_accelerator(self.config.training, self.output_dir)
        if self.model is None:
            self.build_model()
        info = self._model_info(loss)
        compute_loss, train_blocks, collate = self._compute_loss(loss, train_blocks, accelerator)
        self.metrics = run_training(
            self.model, train_dataset=train_blocks, eval_dataset=eval_blocks, training_cfg=self.config.training,
            out_dir=self.output_dir, compute_loss=compute_loss, count_tokens=count_target_tokens, collate_fn=collate, tokenizer=self.tokenizer,
            info=info, resume=resume, accelerator=accelerator, generate=self.recipe.generate if self.recipe else None,
            train_words=train_words_of(train), extra_flops=getattr(compute_loss, "extra_flops", None),
        )  # fmt: skip
        self.model = accelerator.unwrap_model(self.model)
        self.info = (read_info(self.output_dir) if accelerator.is_main_process else None) or ModelInfo()
        self.release_teachers()
        return self.metrics

    def _model_info(self, loss: LossConfig) -> ModelInfo:
        """What ``distill.json`` records besides the metrics: the recipe section, the loss and the hashes."""
        cfg = self.config
        settings = dataclasses.asdict(loss)
        del settings["chunk_size"]  # changes memory use, not the loss
        teachers = self.teachers if loss.uses_teachers else None
        return ModelInfo(
            name="baseline" if self.role == "baseline" else cfg.name, role=self.role, arch=cfg.arch, seq_len=self.seq_len,
            recipe=cfg.to_dict(), tokenizer_sha256=self.tokenizer_sha256,
            corpus_manifest_sha256=manifest_sha256(self.recipe) if self.recipe is not None else None,
            teachers={t.name: str(t.path) if t.path else None for t in teachers} if teachers else None,
            teacher_hashes=dict(zip(teachers.names, teachers.hashes())) if teachers else None,
            loss={**settings, "logit_cache": bool(cfg.logit_cache.enabled and loss.uses_teachers)},
        )  # fmt: skip

    def _compute_loss(self, loss: LossConfig, train_blocks, accelerator):
        """The step's loss, the blocks it trains on and their collate function: CE alone, KD on the
        cached targets (read with the blocks, in the loader's workers) or on the live teachers."""
        if not loss.uses_teachers:
            return ce_step, train_blocks, None
        if self.config.logit_cache.enabled:
            cache = self.logit_cache(train_blocks, accelerator)
            return KDStep(loss, self.vocab_size, cached_target(cache)), IndexedBlocks(train_blocks), CachedTargets(cache)
        models, loss = _weighted_only(self.teachers.place(accelerator), loss)
        for model in models:  # the frozen teachers' layers too, when the student's are compiled
            compile_layers(model, self.config.training.compile, accelerator.device, "teachers")
        target = live_target(models, accelerator.autocast)

        def teacher_flops(seq_len: int) -> float:  # the teachers' forwards, for MFU
            return sum(forward_flops_per_token(m, seq_len) for m in models)

        return KDStep(loss, self.vocab_size, target, extra_flops=teacher_flops), train_blocks, None

    def logit_cache(self, train_blocks, accelerator) -> TeacherLogitCache:
        """The teacher-logit cache of these training blocks in ``logit_cache_dir``, built when missing."""
        cfg = self.config
        cache = cfg.logit_cache
        return self.teachers.logit_cache(
            train_blocks, cfg.loss, path=self.logit_cache_dir, top_k=cache.top_k, method=cache.method, samples=cache.samples,
            seq_len=self.seq_len, batch_size=cache_build_batch(cfg.training.batch_size, accelerator.device), accelerator=accelerator, role=self.role,
        )  # fmt: skip

    def save(self, directory: str | Path) -> Path:
        """Write the student as a model folder (safetensors, tokenizer, model card, ``distill.json``), atomically.
        The card's samples continue the recipe's first prompts ("London was" without a recipe)."""
        if self.model is None:
            raise DistillError("Student.save: nothing to save yet; call distill() first or Student.load(dir)")
        directory = Path(directory)
        info = self.info if self.info.role else ModelInfo(
            name=self.config.name, role=self.role, arch=self.config.arch, seq_len=self.seq_len,
            recipe=self.config.to_dict(), metrics=self.metrics,
        )  # fmt: skip
        save_model_folder(directory, self.model, self.tokenizer, info, generate=self.recipe.generate if self.recipe else None,
                          logs_from=self.output_dir, keep_others=False, context_length=self.seq_len,
                          fix="save into a new or empty folder, or move them elsewhere")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "Student":
        """A trained student, or any model folder, for generation, evaluation or further training.

        ``config`` is the folder's saved recipe section as it was (for a plain ``transformers``
        folder: the model's sizes and default settings). No teachers are attached: :meth:`distill`
        with ``alpha < 1`` needs a Student made with teachers.
        """
        model, tokenizer, info = load_model(directory, device=device)
        try:
            config = section_from_dict(StudentConfig, info.recipe or _section_of(model), "recipe")
        except DistillError as err:
            raise DistillError(f"{Path(directory) / 'distill.json'}: {err}; retrain the model or fix its recipe") from None
        student = cls(
            config, (), tokenizer, seq_len=info.seq_len or trained_context(model) or 128,
            vocab_size=model.get_output_embeddings().weight.shape[0], output_dir=directory, role=info.role or "student",
        )  # fmt: skip
        student.model, student.info, student.metrics = model, info, info.metrics
        return student

    def generate(self, prompt: str, *, num_samples: int = 1, **kwargs) -> str | list[str]:
        """Continue ``prompt`` (``<s>`` is prepended, as in training); see :func:`distill.generate.generate`
        for ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``,
        ``repetition_penalty`` and ``seed``. One sample gives a string, several a list."""
        if self.model is None:
            raise DistillError("Student.generate: no model yet; call distill() first or Student.load(dir)")
        self.model.eval()
        kwargs.setdefault("context_length", self.seq_len)
        texts = generate_text(self.model, self.tokenizer, prompt, num_samples=num_samples, **kwargs)
        return texts[0] if num_samples == 1 else texts


def _weighted_only(models: list, loss: LossConfig) -> tuple[list, LossConfig]:
    """The teachers with a positive weight, and the loss with their weights: a teacher weighted 0
    adds nothing to the ensemble target, so it does not run at every step."""
    weights = loss.teacher_weights
    if weights is None or all(w > 0 for w in weights):
        return models, loss
    keep = [i for i, w in enumerate(weights) if w > 0]
    return [models[i] for i in keep], dataclasses.replace(loss, teacher_weights=tuple(weights[i] for i in keep))


def _runs(recipe: Recipe, only: str | None) -> list[str]:
    if only:
        return [only]
    return ["student", "baseline"] if recipe.student.baseline else ["student"]


def _trained_teachers(recipe: Recipe) -> list[Path]:
    """The recipe's teacher folders; DistillError with the command that trains one that is not finished."""
    folders = [recipe.paths.teacher(t.name) for t in recipe.teachers]
    for folder, teacher in zip(folders, recipe.teachers):
        if not is_finished(folder):
            raise DistillError(
                f"{folder}: teacher {teacher.name!r} is not trained yet; train it with "
                f"accelerate launch -m distill.teacher {recipe.command_hint()}"
            )
    return folders


def _check_inputs(recipe: Recipe, runs: list[str], *, force: bool, resume: bool) -> None:
    """Everything that can fail on user input, before any model is built; the corpus and the
    tokenizer (cheap inputs) are made when missing, a missing teacher is an error."""
    state = distributed_state()
    with state.main_process_first():
        require_current(recipe, train_if_missing=True)
    if "student" in runs and recipe.student.uses_teachers:
        _trained_teachers(recipe)
    for name in runs:
        refuse_unfinished(recipe.paths.student if name == "student" else recipe.paths.baseline, resume or force)


@locks_output_dir
def run(recipe: Recipe, *, only: str | None = None, force: bool = False, resume: bool = False) -> dict[str, dict]:
    """Distil the recipe's student (and train its baseline) unless current; ``{run: metrics}``.

    Each run is skipped when :func:`distill.artifacts.why_stale` finds its folder current, else the
    log says why it is (re)trained. Raises :class:`~distill.errors.TrainingInterrupted` on SIGTERM.
    """
    runs = _runs(recipe, only)
    _check_inputs(recipe, runs, force=force, resume=resume)
    state = distributed_state()
    main_log = print if state.is_main_process else (lambda message: None)
    results = {}
    for name in runs:
        if not must_make(recipe, name, force=force, log=main_log):
            continue
        folder = recipe.paths.student if name == "student" else recipe.paths.baseline
        student = Student.from_loaded_recipe(recipe, baseline=name == "baseline")
        metrics = student.distill(resume=resume)
        if state.is_main_process:
            print(
                f"{name}: val loss {metrics['val_loss']:.4f}, perplexity {metrics['val_ppl']:.2f}, "
                f"{metrics['steps']} steps, {metrics['wall_time_s']:.0f}s -> {folder}"
            )
        results[name] = metrics
        del student
        gc.collect()
    return results


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = recipe_parser("python -m distill.student",
                           "Distil the recipe's student from its teachers (and train the no-distillation baseline).",
                           force="retrain even if a finished folder is current",
                           resume="continue unfinished runs from their newest checkpoint")
    parser.add_argument("--only", choices=["student", "baseline"], help="train only the student or only the baseline")
    parser.add_argument("--baseline", action="store_true", help="train only the no-distillation baseline (alpha=1); same as --only baseline")
    add_peak_option(parser)
    args = parse(parser, argv)
    if args.baseline:
        if args.only == "student":
            parser.error("--baseline and --only student contradict each other")
        args.only = "baseline"
    run(load(args), only=args.only, force=args.force, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
