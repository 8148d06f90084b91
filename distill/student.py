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

The teachers run frozen (``eval()``, ``no_grad``) next to the student on every process, or, with
``student.logit_cache.enabled: true``, once before training into a sparse top-k cache
(:mod:`distill.logit_cache`) that every epoch then reads instead (several times faster when the
teachers are much larger than the student; see bench/RESULTS.md).

From Python::

    from distill import Student

    student = Student.from_recipe("recipes/tiny.yaml", alpha=0.7)   # teachers and tokenizer of the recipe
    metrics = student.distill()                                       # the recipe's train / val splits
    print(metrics["val_ppl"], student.generate("London was"))
    student.save("my-student")
    again = Student.load("my-student")
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from distill.errors import DistillError, cli_entry
from distill.recipe import Recipe, StudentConfig, load_recipe

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


def _tokenizer_of(tokenizer):
    from distill.tokenizer import load_tokenizer

    if isinstance(tokenizer, (str, Path)):
        return load_tokenizer(tokenizer)
    return tokenizer


def _module_sha256(model) -> str:
    """Identity of an in-memory teacher: sha256 of its parameter names, shapes and values."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _output_rows(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


@dataclasses.dataclass
class _Teacher:
    """A frozen teacher: its model (loaded lazily from ``path``), name and identity hash."""

    name: str
    path: Path | None
    model: Any = None
    sha256: str | None = None


class Student:
    """A small causal LM distilled from an ensemble of teachers.

    Args:
        config: the recipe's ``student`` section (a :class:`~distill.recipe.StudentConfig` or a dict
            with its keys: arch, hidden_size, num_layers, num_heads, intermediate_size, alpha,
            temperature, divergence, ensemble, teacher_weights, kl_reduction, chunk_size,
            logit_cache, training).
        teachers: model folders (anything ``AutoModelForCausalLM.from_pretrained`` loads, e.g. the
            teachers of a recipe or any other causal LM trained with the same tokenizer) or loaded
            ``transformers`` models. Not needed when ``config.alpha == 1``.
        tokenizer: a tokenizer folder or a loaded ``transformers`` tokenizer. Every teacher folder
            must have the same one (compared by :func:`distill.tokenizer.tokenizer_sha256`).
        seq_len: tokens per training block (the recipe's ``data.seq_len``).
        vocab_size: rows of the student's embedding (default: the teachers' size, else the
            tokenizer's length).
        output_dir: where :meth:`distill` writes the finished folder (default ``models/<name>``).
        cache_dir: where tokenized blocks of text splits are cached (default ``<output_dir>/../tokens``).
        logit_cache_dir: where the teacher-logit cache lives when ``logit_cache.enabled`` (default
            ``logit_cache.dir`` or ``<output_dir>/../teacher_logits``).
        role: ``"student"`` or ``"baseline"`` (written to ``distill.json``).

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
    ):
        if isinstance(config, dict):
            from distill.recipe import _build

            problems: list[str] = []
            config = _build(StudentConfig, copy.deepcopy(config), "student", problems)
            if problems or not isinstance(config, StudentConfig):
                raise DistillError("student config: " + "; ".join(problems or ["not a mapping of student settings"]))
        problems = config.problems("student")
        if problems:
            raise DistillError("student config: " + "; ".join(problems))
        if tokenizer is None:
            raise DistillError("Student: tokenizer is missing; pass the tokenizer folder the teachers were trained with")
        self.config = config
        self.tokenizer = _tokenizer_of(tokenizer)
        from distill.tokenizer import tokenizer_sha256

        self.tokenizer_sha256 = tokenizer_sha256(self.tokenizer)
        self.seq_len = int(seq_len)
        self.role = role
        self.output_dir = Path(output_dir) if output_dir is not None else Path("models") / config.name
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.output_dir.parent / "tokens"
        default_cache = config.logit_cache.dir or self.output_dir.parent / "teacher_logits"
        self.logit_cache_dir = Path(logit_cache_dir) if logit_cache_dir is not None else Path(default_cache)
        self.teachers = [self._teacher(i, t) for i, t in enumerate(teachers)]
        if config.alpha < 1 and not self.teachers:
            raise DistillError(
                f"student.alpha is {config.alpha}, so the loss needs teachers, but none were given; "
                "pass teacher model folders or set alpha=1 for plain training"
            )
        if config.teacher_weights is not None and len(config.teacher_weights) != len(self.teachers):
            raise DistillError(
                f"student.teacher_weights: {len(config.teacher_weights)} weights for {len(self.teachers)} teachers; "
                "give one per teacher or null"
            )
        self.vocab_size = int(vocab_size) if vocab_size else self._default_vocab()
        self.model = None
        self.info: dict = {}
        self.metrics: dict = {}

    # ------------------------------------------------------------------------------ construction

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
        config = copy.deepcopy(recipe.student)
        if baseline:
            config.alpha = 1.0
        paths = recipe.paths
        teachers = [] if config.alpha >= 1 else [paths.teacher(t.name) for t in recipe.teachers]
        for folder, teacher in zip(teachers, recipe.teachers):
            if not (folder / "distill.json").is_file():
                raise DistillError(
                    f"{folder}: teacher {teacher.name!r} is not trained yet (no distill.json); train it with "
                    f"accelerate launch -m distill.teacher {recipe.command_hint()}"
                )
        if not (paths.tokenizer / "tokenizer.json").is_file():
            raise DistillError(
                f"{paths.tokenizer}: no tokenizer yet; train it with python -m distill.tokenizer {recipe.command_hint()}"
            )
        student = cls(
            config,
            teachers,
            paths.tokenizer,
            seq_len=recipe.data.seq_len,
            vocab_size=recipe.tokenizer.vocab_size,
            output_dir=paths.baseline if baseline else paths.student,
            cache_dir=paths.tokens,
            logit_cache_dir=paths.teacher_logits,
            role="baseline" if baseline else "student",
        )
        student.recipe = recipe
        return student

    def _teacher(self, i: int, teacher) -> _Teacher:
        from distill.tokenizer import tokenizer_sha256

        if isinstance(teacher, (str, Path)):
            from distill.generate import read_model_info

            folder = Path(teacher)
            if not (folder / "config.json").is_file():
                raise DistillError(f"{folder}: not a model folder (no config.json); give a folder written by save_pretrained")
            info = read_model_info(folder)
            mine = self.tokenizer_sha256
            theirs = tokenizer_sha256(folder) if (folder / "tokenizer.json").is_file() else info.get("tokenizer_sha256")
            if theirs is None:
                raise DistillError(
                    f"{folder}: has no tokenizer.json, so it cannot be checked against the student's tokenizer; "
                    "save the teacher's tokenizer into its folder (tokenizer.save_pretrained)"
                )
            if theirs != mine:
                raise DistillError(
                    f"{folder}: this teacher was trained with another tokenizer (sha256 {theirs[:12]}... vs the "
                    f"student's {mine[:12]}...); distillation needs one shared vocabulary: retrain the teacher "
                    "with this tokenizer or give the student the teacher's tokenizer"
                )
            name = info.get("name", folder.name)
            return _Teacher(name=name, path=folder)
        if not hasattr(teacher, "get_output_embeddings"):
            raise DistillError(f"teachers[{i}]: {type(teacher).__name__} is not a transformers causal LM or a model folder")
        name = getattr(getattr(teacher, "config", None), "name_or_path", "") or f"teacher{i}"
        return _Teacher(name=Path(str(name)).name or f"teacher{i}", path=None, model=teacher)

    def _default_vocab(self) -> int:
        sizes = []
        for teacher in self.teachers:
            if teacher.model is not None:
                sizes.append(_output_rows(teacher.model))
            else:
                config = json.loads((teacher.path / "config.json").read_text(encoding="utf-8"))
                sizes.append(int(config.get("vocab_size") or len(self.tokenizer)))
        return min(sizes) if sizes else len(self.tokenizer)

    def teacher_hashes(self) -> list[str]:
        """sha256 identity of each teacher (folder: config + weights; module: its parameters)."""
        from distill.logit_cache import model_folder_sha256

        for teacher in self.teachers:
            if teacher.sha256 is None:
                teacher.sha256 = model_folder_sha256(teacher.path) if teacher.path else _module_sha256(teacher.model)
        return [t.sha256 for t in self.teachers]

    def build_model(self):
        """A freshly initialised student (seeded by ``training.seed``)."""
        from accelerate.utils import set_seed

        from distill.models import build_model

        set_seed(self.config.training.seed)
        self.model = build_model(self.config, self.vocab_size, self.seq_len)
        return self.model

    # ------------------------------------------------------------------------------ data

    def blocks(self, data):
        """Training blocks from a ``datasets.Dataset`` with ``input_ids``, a split file or a list of texts."""
        from distill.data import build_blocks

        if data is None:
            raise DistillError("Student.distill: no training data; pass a split file, a list of texts or a block dataset")
        if hasattr(data, "column_names"):
            if "input_ids" not in data.column_names:
                raise DistillError(f"dataset has columns {data.column_names}, no input_ids; pass blocks from distill.data.build_blocks")
            return data
        if isinstance(data, (str, Path)):
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            return build_blocks(data, self.tokenizer, self.seq_len, self.cache_dir)
        if isinstance(data, Iterable):
            return _blocks_from_texts(list(data), self.tokenizer, self.seq_len)
        raise DistillError(f"cannot train on a {type(data).__name__}; pass a split file, a list of texts or a block dataset")

    # ------------------------------------------------------------------------------ training

    def distill(self, train=None, eval=None, *, resume: bool = False, accelerator=None) -> dict:
        """Train the student (or, with ``alpha == 1``, the baseline) and write its folder.

        ``train`` / ``eval``: block datasets, split files or lists of texts (default: the recipe's
        train and val splits when made by :meth:`from_recipe`). ``resume`` continues from the newest
        checkpoint in ``output_dir``. Returns the final metrics (``val_loss``, ``val_ppl``, ``steps``,
        ...), which also go to ``output_dir/distill.json``.
        """
        from distill.training import count_target_tokens, distributed_state, make_accelerator, train as run_training

        recipe = getattr(self, "recipe", None)
        if train is None and recipe is not None:
            train = self.recipe_train_split()
        if eval is None and recipe is not None:
            eval = recipe.paths.split("val")
        if eval is None:
            raise DistillError("Student.distill: no validation data; pass eval= (a split file, texts or blocks)")
        state = distributed_state()
        with state.main_process_first():
            train_blocks, eval_blocks = self.blocks(train), self.blocks(eval)
        cfg = self.config
        accelerator = accelerator or make_accelerator(cfg.training, self.output_dir)
        if self.model is None:
            self.build_model()
        tok_hash = self.tokenizer_sha256
        metadata = {
            "name": "baseline" if self.role == "baseline" else cfg.name,
            "role": self.role,
            "arch": cfg.arch,
            "seq_len": self.seq_len,
            "recipe": cfg.to_dict(),
            "tokenizer_sha256": tok_hash,
            "loss": {
                "alpha": cfg.alpha,
                "temperature": cfg.temperature,
                "divergence": cfg.divergence,
                "ensemble": cfg.ensemble,
                "teacher_weights": cfg.teacher_weights,
                "kl_reduction": cfg.kl_reduction,
                "logit_cache": bool(cfg.logit_cache.enabled and cfg.alpha < 1),
            },
            "metrics": {},
        }
        if recipe is not None:
            from distill.teacher import manifest_sha256

            metadata["corpus_manifest_sha256"] = manifest_sha256(recipe)
        collate_fn = None
        if cfg.alpha >= 1:
            compute_loss = _ce_loss
        else:
            metadata["teachers"] = {t.name: str(t.path) if t.path else None for t in self.teachers}
            metadata["teacher_hashes"] = dict(zip([t.name for t in self.teachers], self.teacher_hashes()))
            if cfg.logit_cache.enabled:
                cache = self._logit_cache(train_blocks, accelerator)
                train_blocks = _Indexed(train_blocks)
                collate_fn = _collate_indexed
                compute_loss = _KDLoss(self, cache=cache)
            else:
                self._place_teachers(accelerator)
                compute_loss = _KDLoss(self, teachers=[t.model for t in self.teachers], accelerator=accelerator)
        self.metrics = run_training(
            self.model,
            train_dataset=train_blocks,
            eval_dataset=eval_blocks,
            training_cfg=cfg.training,
            out_dir=self.output_dir,
            compute_loss=compute_loss,
            count_tokens=count_target_tokens,
            collate_fn=collate_fn,
            tokenizer=self.tokenizer,
            extra_metadata=metadata,
            resume=resume,
            accelerator=accelerator,
            model_name=metadata["name"],
            role=self.role,
        )
        self.model = accelerator.unwrap_model(self.model)
        self.info = json.loads((self.output_dir / "distill.json").read_text(encoding="utf-8")) if accelerator.is_main_process else {}
        self.release_teachers()
        return self.metrics

    def recipe_train_split(self) -> Path:
        """The recipe's train split, or, with ``facts_in_train: false``, a copy without the facts
        that the corpus stage injected (``manifest.json`` names them), so that a fact can reach the
        student only through its teachers. The copy lives in the recipe's token cache folder."""
        from distill.atomic import atomic_write_text
        from distill.corpus.clean import clean_text
        from distill.corpus.records import format_record
        from distill.corpus.split import load_facts
        from distill.tokenizer import iter_records

        paths = self.recipe.paths
        split = paths.split("train")
        if self.config.facts_in_train:
            return split
        manifest_path = paths.corpus / "manifest.json"
        manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
        info = manifest.get("facts")
        if not info:
            return split
        try:
            facts = {clean_text(fact) for fact in load_facts(info["file"])}
        except DistillError as err:
            raise DistillError(f"{err}; student.facts_in_train=false needs the facts file the corpus was built with ({manifest_path})") from None
        kept, dropped = [], 0
        for text in iter_records(split):
            if text in facts:
                dropped += 1
            else:
                kept.append(text)
        if dropped != info.get("records", dropped):
            raise DistillError(
                f"{split}: found {dropped} of the {info.get('records')} injected fact records; the facts file "
                f"{info['file']} changed since the corpus was built: rebuild it (python -m distill.corpus all --recipe ...)"
            )
        digest = hashlib.sha256(split.read_bytes()).hexdigest()[:16]
        out = paths.tokens / f"train-without-facts-{digest}.txt"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, "".join(format_record(text) for text in kept))
        return out

    def _load_teacher(self, teacher: _Teacher):
        if teacher.model is None:
            from transformers import AutoModelForCausalLM

            teacher.model = AutoModelForCausalLM.from_pretrained(str(teacher.path), use_safetensors=True)
        rows = _output_rows(teacher.model)
        if rows < self.vocab_size:
            where = teacher.path or teacher.name
            raise DistillError(
                f"{where}: the teacher has {rows} output rows but the student {self.vocab_size}; "
                "they must share the tokenizer and vocabulary size (tokenizer.vocab_size)"
            )
        teacher.model.eval().requires_grad_(False)
        return teacher.model

    def _place_teachers(self, accelerator) -> None:
        import torch

        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else None
        for teacher in self.teachers:
            self._load_teacher(teacher).to(accelerator.device, dtype=dtype)

    def release_teachers(self) -> None:
        """Drop teachers loaded from folders (they are reloaded when needed)."""
        for teacher in self.teachers:
            if teacher.path is not None:
                teacher.model = None
        gc.collect()

    def _logit_cache(self, train_blocks, accelerator):
        from distill.logit_cache import TeacherLogitCache, blocks_sha256

        cfg = self.config
        expect = {
            "teacher_hashes": self.teacher_hashes(),
            "tokenizer_hash": self.tokenizer_sha256,
            "temperature": float(cfg.temperature),
            "top_k": int(cfg.logit_cache.top_k),
            "ensemble": cfg.ensemble,
            "weights": cfg.teacher_weights,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "num_blocks": len(train_blocks),
            "dataset_sha256": blocks_sha256(train_blocks),
        }
        path = self.logit_cache_dir
        if (path / "manifest.json").is_file():
            return TeacherLogitCache.open(path, expect=expect)
        self._place_teachers(accelerator)
        if accelerator.is_main_process:
            print(f"{self.role}: building the teacher-logit cache (top {cfg.logit_cache.top_k}) in {path}", file=sys.stderr)
        cache = TeacherLogitCache.build(
            [t.model for t in self.teachers],
            train_blocks,
            path,
            temperature=cfg.temperature,
            top_k=cfg.logit_cache.top_k,
            vocab_size=self.vocab_size,
            teacher_hashes=expect["teacher_hashes"],
            tokenizer_hash=expect["tokenizer_hash"],
            ensemble=cfg.ensemble,
            weights=cfg.teacher_weights,
            batch_size=max(cfg.training.batch_size, 1),
            accelerator=accelerator,
        )
        self.release_teachers()
        cache.check(expect)
        return cache

    # ------------------------------------------------------------------------------ after training

    def save(self, directory: str | Path) -> Path:
        """Write the student as a model folder (safetensors, tokenizer, ``distill.json``), atomically."""
        from distill.atomic import atomic_dir

        if self.model is None:
            raise DistillError("Student.save: nothing to save yet; call distill() first or Student.load(dir)")
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            metrics = self.output_dir / "metrics.jsonl"
            if metrics.is_file() and metrics.resolve() != (directory / "metrics.jsonl").resolve():
                (tmp / "metrics.jsonl").write_bytes(metrics.read_bytes())
            info = dict(self.info) or {"name": self.config.name, "role": self.role, "arch": self.config.arch,
                                       "seq_len": self.seq_len, "recipe": self.config.to_dict(), "metrics": self.metrics}
            (tmp / "distill.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "Student":
        """A trained student (or any model folder this library wrote) for generation and evaluation."""
        from distill.generate import load_model

        model, tokenizer, info = load_model(directory, device=device)
        recipe = info.get("recipe") or {}
        config = {k: v for k, v in recipe.items() if k in {f.name for f in dataclasses.fields(StudentConfig)}}
        config.setdefault("arch", info.get("arch", getattr(model.config, "model_type", "llama")))
        config.setdefault("hidden_size", model.config.hidden_size)
        config.setdefault("num_layers", model.config.num_hidden_layers)
        config.setdefault("num_heads", model.config.num_attention_heads)
        config.setdefault("intermediate_size", getattr(model.config, "intermediate_size", None) or 4 * model.config.hidden_size)
        config["alpha"] = 1.0  # a loaded student has no teachers attached
        student = cls(
            config, (), tokenizer, seq_len=info.get("seq_len", 128), vocab_size=_output_rows(model),
            output_dir=directory, role=info.get("role", "student"),
        )
        student.model, student.info = model, info
        student.metrics = info.get("metrics", {})
        return student

    def generate(self, prompt: str, *, num_samples: int = 1, **kwargs) -> str | list[str]:
        """Continue ``prompt`` (``<s>`` is prepended, as in training); see :func:`distill.generate.generate`
        for ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``,
        ``repetition_penalty`` and ``seed``. One sample gives a string, several a list."""
        from distill.generate import generate

        if self.model is None:
            raise DistillError("Student.generate: no model yet; call distill() first or Student.load(dir)")
        self.model.eval()
        if not hasattr(self.model, "distill_info"):
            self.model.distill_info = {"seq_len": self.seq_len}
        texts = generate(self.model, self.tokenizer, prompt, num_samples=num_samples, **kwargs)
        return texts[0] if num_samples == 1 else texts


# ---------------------------------------------------------------------------------- losses


def _ce_loss(model, batch, window):
    """The baseline's loss: next-token CE (logged as ``ce`` too, for the report's curves)."""
    from distill.training import causal_lm_loss

    loss, _ = causal_lm_loss(model, batch, window)
    return loss, {"ce": loss.detach()}


class _KDLoss:
    """``compute_loss`` for :func:`distill.training.train`: the fused chunked blended KD loss.

    The student runs through its (possibly DDP-wrapped) module with ``logits_to_keep=1``, so no
    (B, T, V) logits are made; a forward hook on its base model keeps the final hidden states,
    which :func:`distill.losses.chunked_kd_loss` multiplies with the lm_head chunk by chunk. The
    target is the teachers' lm_head applied per chunk to their hidden states (live), or the
    sparse cached target of the batch's blocks.
    """

    def __init__(self, student: Student, teachers=None, cache=None, accelerator=None):
        self.cfg = student.config
        self.vocab = student.vocab_size
        self.teachers = teachers or []
        self.cache = cache
        self.accelerator = accelerator
        self._hidden = None
        self._hooked = None

    def _hook(self, model) -> None:
        base = model.base_model
        if self._hooked is not base:
            base.register_forward_hook(self._keep)
            self._hooked = base

    def _keep(self, module, args, output) -> None:
        self._hidden = output[0]

    def __call__(self, model, batch, window):
        import torch

        from distill.losses import chunked_kd_loss, teacher_head_target

        unwrapped = _unwrap(model)
        self._hook(unwrapped)
        input_ids, labels = batch["input_ids"], batch["labels"]
        attention_mask = batch.get("attention_mask")
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        hidden, self._hidden = self._hidden, None  # (B, T, H)
        head = unwrapped.get_output_embeddings()
        if self.cache is not None:
            target = self.cache[batch["block_index"]].to(hidden.device)
        else:
            states, weights, biases = [], [], []
            with torch.no_grad(), self.accelerator.autocast():
                for teacher in self.teachers:
                    out = teacher.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                    states.append(out[0])
                    teacher_head = teacher.get_output_embeddings()
                    weights.append(teacher_head.weight)
                    biases.append(teacher_head.bias)
            target = teacher_head_target(states, weights, biases)
        cfg = self.cfg
        alpha, ratio = cfg.alpha, 1.0
        if cfg.kl_reduction == "legacy_batchmean":
            # BabyLlama divides the KL by the batch size; over a window of micro-batches and
            # processes that is the window's sequence count. chunked_kd_loss divides by the local
            # B, so the KL share is scaled by r = B_local / window.num_sequences through alpha:
            # a' * CE + (1 - a') * KL = c * (a * CE + (1 - a) * r * KL) with c = 1 / (a + (1 - a) r).
            ratio = input_ids.shape[0] / max(window.num_sequences, 1)
            scale = 1.0 / (cfg.alpha + (1.0 - cfg.alpha) * ratio)
            alpha = cfg.alpha * scale
        out = chunked_kd_loss(
            hidden,
            head.weight,
            head.bias,
            labels,
            target,
            alpha=alpha,
            temperature=cfg.temperature,
            divergence=cfg.divergence,
            ensemble=cfg.ensemble,
            weights=cfg.teacher_weights,
            kl_reduction=cfg.kl_reduction,
            vocab_size=self.vocab,
            num_valid_tokens=window.num_tokens,
            chunk_size=cfg.chunk_size,
        )
        loss = out.loss if ratio == 1.0 else out.loss / scale
        return loss, {"ce": out.ce, "kl": out.kl * ratio}


def _unwrap(model):
    """The transformers model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


class _Indexed:
    """A block dataset whose items also carry their index (the logit cache is keyed by it)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.dataset[index]["input_ids"], "block_index": index}


def _collate_indexed(items: list[dict]) -> dict:
    import torch

    from distill.data import collate_blocks

    batch = collate_blocks(items)
    if "block_index" in items[0]:  # training blocks; the validation loader shares this collate_fn
        batch["block_index"] = torch.tensor([item["block_index"] for item in items], dtype=torch.long)
    return batch


def _blocks_from_texts(texts: list[str], tokenizer, seq_len: int):
    """Blocks of ``seq_len`` from in-memory texts, laid out as :mod:`distill.data` does for a split."""
    import datasets

    from distill.data import text_blocks

    blocks = [block["input_ids"] for block in text_blocks(texts, tokenizer, seq_len)]
    if not blocks:
        raise DistillError(f"the texts give fewer than seq_len={seq_len} tokens; give more text or a lower seq_len")
    return datasets.Dataset.from_dict({"input_ids": blocks}).with_format("numpy")


# ---------------------------------------------------------------------------------- command line


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m distill.student",
        description="Distil the recipe's student from its teachers (and train the no-distillation baseline).",
    )
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. student.alpha=0.7")
    parser.add_argument("--only", choices=["student", "baseline"], help="train only the student or only the baseline")
    parser.add_argument("--baseline", action="store_true", help="train only the no-distillation baseline (alpha=1); same as --only baseline")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs from their newest checkpoint")
    parser.add_argument("--force", action="store_true", help="retrain even if a finished folder exists")
    args = parser.parse_intermixed_args(argv)  # overrides may come after options
    if args.baseline:
        if args.only == "student":
            parser.error("--baseline and --only student contradict each other")
        args.only = "baseline"
    return args


def _runs(recipe: Recipe, only: str | None) -> list[str]:
    if only:
        return [only]
    return ["student", "baseline"] if recipe.student.baseline else ["student"]


def _check_inputs(recipe: Recipe, runs: list[str], args) -> None:
    """Everything that can fail on user input, before any model is built."""
    from distill.tokenizer import stale_reason
    from distill.training import is_finished, refuse_unfinished

    paths = recipe.paths
    for split in ("train", "val"):
        if not paths.split(split).is_file():
            raise DistillError(
                f"{paths.split(split)}: corpus split missing; build it with python -m distill.corpus all --recipe {recipe.command_hint()}"
            )
    reason = stale_reason(recipe)
    if reason == "missing":
        raise DistillError(f"{paths.tokenizer}: no tokenizer yet; train it with python -m distill.tokenizer {recipe.command_hint()}")
    if reason is not None:
        raise DistillError(
            f"{paths.tokenizer}: does not match the recipe: {reason}; retrain the tokenizer and the teachers "
            f"(python -m distill.tokenizer {recipe.command_hint()} --force), or change tokenizer.* to match it"
        )
    if "student" in runs and recipe.student.alpha < 1:
        for teacher in recipe.teachers:
            folder = paths.teacher(teacher.name)
            if not is_finished(folder):
                raise DistillError(
                    f"{folder}: teacher {teacher.name!r} is not trained yet; train it with "
                    f"accelerate launch -m distill.teacher {recipe.command_hint()}"
                )
    for run in runs:
        folder = paths.baseline if run == "baseline" else paths.student
        refuse_unfinished(folder, args.resume or args.force)


def _up_to_date(student: Student, folder: Path) -> str | None:
    """Why a finished folder must be retrained (None: it matches this run's tokenizer and teachers)."""
    info = json.loads((folder / "distill.json").read_text(encoding="utf-8"))
    if info.get("tokenizer_sha256") != student.tokenizer_sha256:
        return "it was trained with another tokenizer"
    if student.config.alpha < 1:
        hashes = dict(zip([t.name for t in student.teachers], student.teacher_hashes()))
        if info.get("teacher_hashes") != hashes:
            return "its teachers have changed"
    if info.get("recipe") != student.config.to_dict():
        return "the recipe's student section has changed"
    return None


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    runs = _runs(recipe, args.only)
    _check_inputs(recipe, runs, args)

    from distill.training import TrainingInterrupted, distributed_state, is_finished

    state = distributed_state()
    for run in runs:
        student = Student.from_loaded_recipe(recipe, baseline=run == "baseline")
        folder = student.output_dir
        if is_finished(folder) and not args.force:
            reason = _up_to_date(student, folder)
            if reason is None:
                if state.is_main_process:
                    print(f"{run}: finished in {folder}, skipping (--force retrains it)")
                continue
            if state.is_main_process:
                print(f"{run}: {folder} is out of date ({reason}); retraining", file=sys.stderr)
        try:
            metrics = student.distill(resume=args.resume)
        except TrainingInterrupted as stop:
            if state.is_main_process:
                print(f"{stop}", file=sys.stderr)
            return 143
        if state.is_main_process:
            print(
                f"{run}: val loss {metrics['val_loss']:.4f}, perplexity {metrics['val_ppl']:.2f}, "
                f"{metrics['steps']} steps, {metrics['wall_time_s']:.0f}s -> {folder}"
            )
        del student
        gc.collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
