"""The recipe: one YAML file that drives every stage, as typed dataclasses.

``load_recipe(path, overrides)`` reads the YAML with ``yaml.safe_load``, applies ``key=value``
command-line overrides, converts every section into its dataclass (:mod:`distill.typed_config`)
and checks it. Every problem (unknown key, wrong type, impossible value) is collected and raised
once as a :class:`~distill.errors.DistillError` that names the key, the value and the fix, e.g.::

    teachers[1].hidden_size: 1000 is not divisible by num_heads 16; pick a multiple of 16

Overrides use dotted keys; list items are picked by index or by their ``name``::

    teachers.0.training.lr=3e-4   teachers[0].training.lr=3e-4   teachers.gpt2.num_layers=2
    student.alpha=0.7             output_dir=/tmp/run           student.teacher_weights=[1,2]

Values are parsed with ``yaml.safe_load`` (``null``, ``true``, ``[1, 2]`` work). Integer fields also
accept ``400_000``, ``"500k"`` and ``"10M"``; float fields accept ``3e-4`` (which YAML 1.1 reads as a
string). Relative paths in a recipe (``output_dir``, ``corpus.source``, ...) are resolved against the
current working directory, not the recipe's folder: run the commands from the repository root.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from distill.atomic import not_a_folder
from distill.errors import DistillError, not_utf8
from distill.recipe_sections import (  # noqa: F401 (re-exported: every section is imported from here)
    _SAFE_NAME, MAX_TRAINING_SEED, MAX_SAMPLING_SEED, CorpusConfig, DataConfig, EvaluateConfig, GenerateConfig,
    GenerationEvalConfig, LogitCacheConfig, ModelConfig, StudentConfig, TokenizerConfig, TrainingConfig, _Section,
    seed_problems, tracker_problems,
)
from distill.typed_config import INTERNAL, apply_override, copy_plain, did_you_mean, from_plain, is_valid, resolve_paths

_S = typing.TypeVar("_S", bound=_Section)


@dataclass(kw_only=True)
class Recipe(_Section):
    name: str  # recipe name; default output folder is models/<name>
    output_dir: Optional[Path] = None  # every stage writes under here; null = models/<name>
    corpus: CorpusConfig  # where the text comes from and the split budgets
    tokenizer: TokenizerConfig  # byte-level BPE settings
    data: DataConfig = field(default_factory=DataConfig)  # tokenized block settings
    teachers: list[ModelConfig]  # teacher models, trained in this order
    student: StudentConfig  # the distilled student and its loss
    generate: GenerateConfig = field(default_factory=GenerateConfig)  # sampling after training
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)  # evaluation settings
    source: Optional[Path] = field(default=None, metadata=INTERNAL)  # the YAML file this came from
    overrides: tuple[str, ...] = field(default=(), metadata=INTERNAL)  # the key=value overrides applied
    inputs_dir: Optional[Path] = field(default=None, metadata=INTERNAL)  # where corpus, tokenizer, tokens and teachers are read (a sweep shares them); null = output_dir

    def __post_init__(self):
        if self.output_dir is None and is_valid(self.name) and isinstance(self.name, str):
            self.output_dir = default_output_dir(self.name)

    @property
    def paths(self) -> "RecipePaths":
        """Where each stage reads and writes, all under ``output_dir``."""
        return RecipePaths(self)

    def teacher(self, name: str) -> ModelConfig:
        """The teacher section called ``name`` (DistillError naming the closest one otherwise)."""
        for teacher in self.teachers:
            if teacher.name == name:
                return teacher
        names = [t.name for t in self.teachers]
        raise DistillError(f"no teacher named {name!r} in {self.source or 'the recipe'}{did_you_mean(name, names)}")

    def command_hint(self) -> str:
        """The recipe argument(s) to repeat in a suggested command: path plus overrides."""
        parts = [str(self.source) if self.source else "RECIPE.yaml", *self.overrides]
        return " ".join(parts)

    def problems(self, key="", recipe=None):
        out = []
        if is_valid(self.name) and not _SAFE_NAME.fullmatch(self.name or ""):
            out.append(f"name: {self.name!r} is not a safe folder name; use letters, digits, '-', '_' or '.'")
        if is_valid(self.output_dir) and self.output_dir is not None and (why := not_a_folder(Path(self.output_dir))):
            out.append(f"output_dir: {why}; every stage writes under it, so give a folder, e.g. output_dir=models/{self.name}")
        for section in ("corpus", "tokenizer", "data"):
            value = getattr(self, section)
            if isinstance(value, _Section):
                out += value.problems(section, self)
        if isinstance(self.teachers, list):
            if not self.teachers:
                out.append("teachers: empty; list at least one teacher (see recipes/tiny.yaml)")
            seen: dict[str, int] = {}
            for i, teacher in enumerate(self.teachers):
                if not isinstance(teacher, ModelConfig):
                    continue
                out += teacher.problems(f"teachers[{i}]", self)
                if is_valid(teacher.name) and teacher.name in seen:
                    out.append(f"teachers[{i}].name: {teacher.name!r} is already used by teachers[{seen[teacher.name]}]; names must be unique")
                seen.setdefault(teacher.name, i)
            # One process trains all teachers and Accelerate fixes mixed precision once per process.
            precisions = {
                t.training.mixed_precision
                for t in self.teachers
                if isinstance(t, ModelConfig) and isinstance(t.training, TrainingConfig) and is_valid(t.training.mixed_precision)
            }
            if len(precisions) > 1:
                out.append(
                    f"teachers[*].training.mixed_precision: {sorted(map(str, precisions))} differ; "
                    "one process trains every teacher, so give them all the same value"
                )
        for section in ("student", "generate", "evaluate"):
            value = getattr(self, section)
            if isinstance(value, _Section):
                out += value.problems(section, self)
        return out


class RecipePaths:
    """The recipe's folders and files. Every stage uses these instead of building paths itself."""

    def __init__(self, recipe: Recipe):
        self.root = Path(recipe.output_dir)
        self.inputs = Path(recipe.inputs_dir) if recipe.inputs_dir is not None else self.root  # shared stages' outputs
        self._recipe = recipe

    @property
    def corpus(self) -> Path:
        """Split folder: train.txt, val.txt, test.txt, manifest.json."""
        return self.inputs / "corpus"

    def split(self, name: str) -> Path:
        """One split file, e.g. ``paths.split("train")``."""
        return self.corpus / f"{name}.txt"

    @property
    def tokenizer(self) -> Path:
        return self.inputs / "tokenizer"

    @property
    def tokens(self) -> Path:
        """Cache of tokenized blocks (datasets Arrow folders keyed by hashes)."""
        return self.inputs / "tokens"

    def teacher(self, name: str) -> Path:
        return self.inputs / "teachers" / name

    @property
    def student(self) -> Path:
        return self.root / "student"

    @property
    def baseline(self) -> Path:
        return self.root / "baseline"

    @property
    def teacher_logits(self) -> Path:
        cache_dir = self._recipe.student.logit_cache.dir
        return Path(cache_dir) if cache_dir else self.root / "teacher_logits"

    @property
    def report(self) -> Path:
        """Evaluation report folder (report.json, report.md, plots)."""
        return self.root / "report"


def default_output_dir(name: str) -> Path:
    """Where a recipe (or a model) called ``name`` writes when no ``output_dir`` is given."""
    return Path("models") / name


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override, convert and check a recipe; raise one DistillError listing every problem."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DistillError(f"{path}: recipe not found; give a YAML file such as recipes/tiny.yaml") from None
    except OSError as err:
        raise DistillError(f"{path}: cannot read the recipe ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise not_utf8(path, err, "save the recipe as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise DistillError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise DistillError(f"{path}: a recipe must be a YAML mapping of sections (see recipes/tiny.yaml)")
    return recipe_from_dict(data, overrides, source=path)


def recipe_from_dict(data: dict, overrides: Sequence[str] = (), source: Path | None = None) -> Recipe:
    """Like :func:`load_recipe` for data already in memory (a dict as YAML would give it)."""
    problems: list[str] = []
    data = copy_plain(data)
    for override in overrides:
        apply_override(data, override, problems)
    recipe = from_plain(Recipe, data, "", problems)
    if isinstance(recipe, Recipe):
        problems += recipe.problems()
        recipe.source = source
        recipe.overrides = tuple(overrides)
        if not problems:
            resolve_paths(recipe)
    if problems:
        where = str(source) if source else "recipe"
        if len(problems) == 1:
            raise DistillError(f"{where}: {problems[0]}")
        listing = "\n".join(f"  - {p}" for p in problems)
        raise DistillError(f"{where}: {len(problems)} problems:\n{listing}")
    return recipe


def section_from_dict(cls: type[_S], data: Any, key: str) -> _S:
    """One recipe section (e.g. :class:`StudentConfig`) from a mapping as YAML gives it, checked as
    in a recipe: one DistillError lists every problem, each named under ``key`` (``student.alpha: ...``)."""
    problems: list[str] = []
    section = from_plain(cls, copy_plain(data), key, problems)
    if isinstance(section, cls):
        problems += section.problems(key)
    if problems:
        raise DistillError("; ".join(problems))
    return section
