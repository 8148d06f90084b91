"""Every stage's outputs in one place: what a model folder holds, whether an output is finished, and why it is stale.

A **model folder** (teacher, student or baseline) is what ``save_pretrained`` writes (``config.json``,
``model.safetensors``, the tokenizer) plus ``distill.json``, a :class:`ModelInfo`: the recipe
section it was trained from, the hashes of its tokenizer, corpus and teachers, and its metrics.
``distill.json`` is written last, so a folder is *finished* exactly when it exists.

:func:`why_stale` answers, for every stage of a recipe, "must this output be (re)made, and why?":
``None`` when the output is finished and made from the current inputs, else one line such as
``recipe key training.lr changed 0.003 -> 0.001``. Each stage, the pipeline and its log ask it, so
the answer to "why was my student retrained, or skipped?" lives here.

Also here: the one file hash, the one tokenizer hash, the identity of a teacher (folder or
in-memory module), and loading a model folder for inference (safetensors only).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from distill.atomic import atomic_write_json
from distill.checkpoints import latest_checkpoint
from distill.errors import DistillError
from distill.recipe import ModelConfig, Recipe, StudentConfig

INFO_FILE = "distill.json"
METRICS_FILE = "metrics.jsonl"  # in a model folder: one JSON row per logged train step and validation
SCHEMA_VERSION = 1
RUN_STAMP = "run.json"  # in output_dir: the inputs the report and the samples were made from
NOT_MADE = "not made yet"


@dataclasses.dataclass
class ModelInfo:
    """``distill.json``: how a model folder was made. Written last: its presence means finished."""

    name: str = ""  # the model's name in reports (a teacher's name, the student's, "baseline")
    role: str = ""  # teacher | student | baseline ("" for a folder this library did not write)
    arch: str | None = None  # llama | gpt2
    seq_len: int | None = None  # tokens of context it was trained on
    recipe: dict = dataclasses.field(default_factory=dict)  # the recipe section it was trained from
    tokenizer_sha256: str | None = None  # :func:`tokenizer_sha256` of its tokenizer
    corpus_manifest_sha256: str | None = None  # sha256 of the corpus manifest.json it was trained on
    teachers: dict | None = None  # student: {teacher name: folder or None for an in-memory model}
    teacher_hashes: dict | None = None  # student: {teacher name: :func:`teacher_sha256`}
    loss: dict | None = None  # student and baseline: the loss settings
    num_parameters: int | None = None
    metrics: dict = dataclasses.field(default_factory=dict)  # final val_loss, val_ppl, steps, ...
    words_seen: int | None = None  # a words/<count>/ folder (training.save_at_words): train words seen when it was saved
    step: int | None = None  # a words/<count>/ folder: the optimizer step it was saved after
    version: int = SCHEMA_VERSION
    extra: dict = dataclasses.field(default_factory=dict)  # keys this version does not know, kept

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        data = {k: v for k, v in data.items() if v is not None or k in ("arch", "seq_len", "tokenizer_sha256")}
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict, where: str = INFO_FILE) -> "ModelInfo":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        info = cls(**{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known})
        for key, kind in (("recipe", dict), ("metrics", dict), ("name", str), ("role", str)):
            if not isinstance(getattr(info, key), kind):
                raise DistillError(f"{where}: key {key!r} should be a {kind.__name__}; retrain the model or delete the broken file")
        if info.version > SCHEMA_VERSION:
            raise DistillError(f"{where}: written by a newer distill (schema version {info.version}); upgrade distill to read it")
        return info


def read_info(folder: str | Path) -> ModelInfo | None:
    """The folder's ``distill.json`` (None when it has none: unfinished, or not written by distill)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DistillError(f"{path}: not valid JSON ({err}); retrain the model or delete the broken file") from None
    if not isinstance(data, dict):
        raise DistillError(f"{path}: expected a JSON object; retrain the model or delete the broken file")
    return ModelInfo.from_dict(data, str(path))


def write_info(folder: str | Path, info: ModelInfo) -> None:
    """Write ``distill.json`` atomically; it marks the folder finished, so write it last."""
    atomic_write_json(Path(folder) / INFO_FILE, info.to_dict())


# What save_pretrained writes for a tokenizer, and everything a model folder holds; anything else
# in such a folder is someone else's (distill.atomic.write_folder never deletes it).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "chat_template.jinja", "chat_template.json",
)  # fmt: skip
WEIGHTS_INDEX = "model.safetensors.index.json"
MODEL_FILES = (
    "config.json", "generation_config.json", "*.safetensors", WEIGHTS_INDEX, *TOKENIZER_FILES, INFO_FILE,
    "metrics.jsonl", "checkpoints", "runs", "README.md", "training_curve.png",  # the last two: distill.model_card
    "words",  # words/<count>/: the model folders saved at training.save_at_words (distill.words_seen)
)  # fmt: skip
WORDS_DIR = "words"


def is_finished(folder: str | Path) -> bool:
    """A model folder is finished when its ``distill.json`` (written last), ``config.json`` and
    weights are there: ``model.safetensors``, or every shard its index names."""
    folder = Path(folder)
    if not ((folder / INFO_FILE).is_file() and (folder / "config.json").is_file()):
        return False
    if (folder / "model.safetensors").is_file():
        return True
    try:
        shards = set(json.loads((folder / WEIGHTS_INDEX).read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(shards) and all((folder / str(name)).is_file() for name in shards)


def refuse_unfinished(folder: str | Path, resume_or_force: bool) -> None:
    """DistillError when ``folder`` holds an unfinished run's checkpoint and the user said neither
    ``--resume`` nor ``--force``: a new run would silently throw that work away."""
    checkpoint = latest_checkpoint(folder)
    if checkpoint and not is_finished(folder) and not resume_or_force:
        raise DistillError(f"{folder}: an unfinished run left {checkpoint.name}; continue it with --resume or start over with --force")


_HASHED: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> sha256; every write of ours renames a new file in


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks; remembered while the file stays the same one.

    A stage decision hashes the same files several times (a teacher's weights for the pipeline's
    check, the student stage's check and the ensemble's identity; the train split for every
    tokenizer check), so a file already hashed with the same inode, size and mtime is not read again.
    """
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


def json_sha256(data: Any) -> str:
    """sha256 of a JSON-able value, independent of key order."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """A stable hash of the vocabulary, merges and special tokens.

    ``tokenizer`` is a folder, a ``tokenizer.json`` path, a transformers tokenizer or a
    ``tokenizers.Tokenizer``. Two tokenizers with the same hash turn any text into the same ids.
    """
    if isinstance(tokenizer, (str, Path)):
        path = Path(tokenizer)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise DistillError(f"{path}: no tokenizer here; train one with python -m distill.tokenizer RECIPE.yaml")
        spec = json.loads(path.read_text(encoding="utf-8"))
    else:
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    canonical = {
        "type": model.get("type"),
        "vocab": sorted(model.get("vocab", {}).items(), key=lambda kv: kv[1]),
        "merges": merges,
        "added": sorted((t["id"], t["content"]) for t in spec.get("added_tokens", [])),
    }
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def model_folder_sha256(folder: str | Path) -> str:
    """Identity of a saved model: sha256 over its ``config.json`` and weight files (names and bytes)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted([folder / "config.json", *folder.glob("*.safetensors")]):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def module_sha256(model) -> str:
    """Identity of an in-memory model: sha256 of its parameter names, shapes, dtypes and values."""
    import torch  # only for in-memory teachers; the rest of this module does not need torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def manifest_sha256(recipe: Recipe) -> str | None:
    """sha256 of the corpus ``manifest.json`` (None when the split folder has none)."""
    manifest = recipe.paths.corpus / "manifest.json"
    return file_sha256(manifest) if manifest.is_file() else None


def recipe_changes(saved: Any, wanted: Any, prefix: str = "", limit: int = 3) -> list[str]:
    """``key saved -> wanted`` for each setting that differs (at most ``limit``, then a count)."""
    old, new = _flat(saved, prefix), _flat(wanted, prefix)
    diffs = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    return diffs[:limit] + ([f"{len(diffs) - limit} more"] if len(diffs) > limit else [])


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def model_dirs(recipe: Recipe) -> list[Path]:
    """Every model folder a recipe makes, in report order: teachers, student, baseline (when trained)."""
    paths = recipe.paths
    folders = [paths.teacher(t.name) for t in recipe.teachers] + [paths.student]
    return folders + [paths.baseline] if recipe.student.baseline else folders


def model_names(folders) -> dict[str, Path]:
    """``{name: folder}`` for reports and menus: distill.json's name (``role-name`` when two share
    it, then ``name-2``, ...), else the folder's name."""
    names: dict[str, Path] = {}
    for folder in map(Path, folders):
        info = read_info(folder) or ModelInfo()
        base = str(info.name or folder.name)
        name = base if base not in names else f"{info.role or 'model'}-{base}"
        n = 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names[name] = folder
    return names


def expected_info(recipe: Recipe, role: str, name: str | None = None) -> ModelInfo:
    """What a current model folder of ``role`` records: its recipe section, tokenizer and teachers."""
    paths = recipe.paths
    tokenizer = paths.tokenizer / "tokenizer.json"
    tok_hash = tokenizer_sha256(tokenizer) if tokenizer.is_file() else None
    if role == "teacher":
        return ModelInfo(name=name or "", role=role, recipe=recipe.teacher(name).to_dict(), tokenizer_sha256=tok_hash)
    section = recipe.student.as_baseline() if role == "baseline" else recipe.student
    hashes = None
    if section.uses_teachers:
        hashes = {t.name: model_folder_sha256(paths.teacher(t.name)) for t in recipe.teachers}
    return ModelInfo(name=name or role, role=role, recipe=section.to_dict(), tokenizer_sha256=tok_hash, teacher_hashes=hashes)


# Training settings that change the logs, checkpoints or speed of a run but not the model it makes.
BOOKKEEPING_KEYS = ("log_with", "log_every", "save_every", "keep_checkpoints", "eval_every", "save_at_words", "compile", "num_workers")


def _section_defaults(cls: type, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: default}`` of a recipe section's dataclass, nested sections included."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            out.update(_section_defaults(type(value), f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _with_defaults(section: dict, defaults: dict[str, Any]) -> dict:
    """``section`` with every key it lacks set to its default: a folder saved before a recipe key
    existed was trained as that key's default trains (a new key keeps the old behaviour by default)."""
    section = json.loads(json.dumps(section, default=str))
    for dotted, value in defaults.items():
        *parents, key = dotted.split(".")
        node = section
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and key not in node:
            node[key] = json.loads(json.dumps(value, default=str))
    return section


# Student keys that only shape the KD term, so they do not matter to a model trained with alpha = 1
KD_ONLY_KEYS = ("temperature", "divergence", "ensemble", "teacher_weights", "kl_reduction", "logit_cache", "chunk_size")
# Keys whose default changed after they were added: a section saved without the key was trained with the old value.
_OLD_DEFAULTS = {"logit_cache.method": "topk_tail"}  # every cache was top-k + tail before ``method`` existed


def trained_by(section: dict) -> dict:
    """What decides a model's weights in its recipe section: every key (missing ones at their
    defaults) but :data:`BOOKKEEPING_KEYS`, only ``enabled`` of a disabled logit cache, and none of
    :data:`KD_ONLY_KEYS` for a model trained without teachers (``alpha`` 1, the baseline)."""
    defaults = _section_defaults(StudentConfig if "alpha" in section else ModelConfig) | _OLD_DEFAULTS
    section = _with_defaults(section, defaults)
    if "training" in section:
        section["training"] = {k: v for k, v in (section.get("training") or {}).items() if k not in BOOKKEEPING_KEYS}
    if isinstance(section.get("logit_cache"), dict) and not section["logit_cache"].get("enabled"):
        section["logit_cache"] = {"enabled": False}
    if section.get("alpha") == 1:  # no KD term: a baseline is the same model whatever the KD settings
        for key in KD_ONLY_KEYS:
            section.pop(key, None)
    return section


def model_stale(folder: str | Path, expected: ModelInfo) -> str | None:
    """Why a model folder must be (re)trained for ``expected``; None when it is finished and current."""
    saved = read_info(folder)
    if saved is None or not is_finished(folder):
        return NOT_MADE
    if saved.tokenizer_sha256 != expected.tokenizer_sha256:
        return "it was trained with another tokenizer"
    if expected.teacher_hashes is not None and saved.teacher_hashes != expected.teacher_hashes:
        changed = sorted(k for k in expected.teacher_hashes if (saved.teacher_hashes or {}).get(k) != expected.teacher_hashes[k])
        return f"its teachers have changed ({', '.join(changed) or 'other teachers'})"
    before, now = trained_by(saved.recipe or {}), trained_by(expected.recipe or {})
    if before != now:
        changes = recipe_changes(before, now)
        return f"recipe key{'s' if len(changes) > 1 else ''} changed: {', '.join(changes)}"
    return None


def corpus_stale(recipe: Recipe) -> str | None:
    """Why the corpus splits must be (re)built: none yet, or ``manifest.json`` records other settings."""
    manifest_path = recipe.paths.corpus / "manifest.json"
    if not manifest_path.is_file():
        return NOT_MADE
    manifest = _read_json(manifest_path)
    corpus = recipe.corpus
    saved_source = manifest.get("source")
    budgets = manifest.get("requested_budgets") or manifest.get("budgets") or {}
    facts = manifest.get("facts") or None
    saved = {
        "source": str((Path.cwd() / saved_source).resolve()) if isinstance(saved_source, str) else saved_source,
        "train_words": budgets.get("train"),
        "val_words": budgets.get("val"),
        "test_words": budgets.get("test"),
        "seed": manifest.get("seed"),
        "facts": facts.get("sha256") if facts else None,
        "fact_repeats": facts.get("repeats") if facts else 0,
    }
    with_facts = corpus.facts is not None and corpus.fact_repeats > 0 and Path(corpus.facts).is_file()
    wanted = {
        "source": str(Path(corpus.source).resolve()),
        "train_words": corpus.train_words,
        "val_words": corpus.val_words,
        "test_words": corpus.test_words,
        "seed": corpus.seed,
        "facts": file_sha256(corpus.facts) if with_facts else None,
        "fact_repeats": corpus.fact_repeats if with_facts else 0,
    }
    diffs = recipe_changes(saved, wanted, prefix="corpus.")
    missing = [name for name in ("train", "val", "test") if not recipe.paths.split(name).is_file()]
    if missing:
        diffs.append(f"{', '.join(missing)} split missing")
    from distill.corpus.dataset import dataset_folder  # here: distill.corpus imports the splitter, which imports this module

    if not (dataset_folder(recipe.paths.corpus) / "dataset_dict.json").is_file():
        diffs.append("the corpus dataset is missing")
    return f"built with other settings: {'; '.join(diffs)}" if diffs else None


TOKENIZER_STAMP = "distill_tokenizer.json"  # in the tokenizer folder: what it was trained on


def tokenizer_stale(recipe: Recipe) -> str | None:
    """Why the recipe's tokenizer must be (re)trained: none yet, other settings or another train split."""
    folder = recipe.paths.tokenizer
    if not (folder / "tokenizer.json").is_file():
        return NOT_MADE
    stamp = _read_json(folder / TOKENIZER_STAMP)
    if not stamp:
        return f"{folder / TOKENIZER_STAMP} is missing, so it is unknown what the tokenizer was trained on"
    for key in ("vocab_size", "min_frequency"):
        if stamp.get(key) != getattr(recipe.tokenizer, key):
            return f"it was trained with {key} {stamp.get(key)} but the recipe says {getattr(recipe.tokenizer, key)}"
    train = recipe.paths.split("train")
    if train.is_file() and stamp.get("train_sha256") != file_sha256(train):
        return f"{train} changed since the tokenizer was trained on it"
    return None


def stage_inputs(recipe: Recipe, stage: str) -> str:
    """A hash of everything the report (``evaluate``) or the samples (``samples``) are made from."""
    if stage == "samples":
        student = recipe.paths.student / INFO_FILE
        return json_sha256({"student": file_sha256(student) if student.is_file() else None, "generate": recipe.generate.to_dict()})
    evaluate = recipe.evaluate
    files = {f"model:{Path(os.path.relpath(folder, recipe.paths.root)).as_posix()}": file_sha256(folder / INFO_FILE)
             for folder in model_dirs(recipe) if is_finished(folder)}
    for split in evaluate.splits:
        path = recipe.paths.split(split)
        files[f"split:{split}"] = file_sha256(path) if path.is_file() else None
    if evaluate.blimp_dir is not None and Path(evaluate.blimp_dir).is_dir():
        for path in sorted(Path(evaluate.blimp_dir).glob("*.jsonl")):
            files[f"blimp:{path.name}"] = file_sha256(path)
    facts = evaluate.facts or recipe.corpus.facts
    if facts is not None and Path(facts).is_file():
        files["facts"] = file_sha256(facts)
    made_from = {"files": files, "seq_len": recipe.data.seq_len, "evaluate": evaluate.to_dict()}
    text = evaluate.generation
    if text.enabled:  # the generated text also depends on generate.prompts, the test split's openings and the judge
        test, judge = recipe.paths.split("test"), Path(text.judge or "") / INFO_FILE
        if text.test_openings:
            files["split:test"] = file_sha256(test) if test.is_file() else None
        if text.judge is not None:
            files["judge"] = file_sha256(judge) if judge.is_file() else None
        made_from["generate"] = recipe.generate.to_dict() if text.decoding == "recipe" else {"prompts": recipe.generate.prompts}
    return json_sha256(made_from)


def write_stamp(recipe: Recipe, stage: str, inputs: str) -> None:
    """Record in ``output_dir/run.json`` that ``stage`` finished from ``inputs`` (see :func:`stage_inputs`)."""
    path = recipe.paths.root / RUN_STAMP
    stamp = _read_json(path)
    stamp[stage] = {"inputs_sha256": inputs, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(path, stamp)


def _stamp_stale(recipe: Recipe, stage: str, outputs: list[Path], what: str) -> str | None:
    if not all(path.is_file() for path in outputs):
        return NOT_MADE
    saved = _read_json(recipe.paths.root / RUN_STAMP).get(stage, {}).get("inputs_sha256")
    return None if saved == stage_inputs(recipe, stage) else f"not made from the current {what}"


def must_make(recipe: Recipe, stage: str, name: str | None = None, *, force: bool = False, log=print) -> bool:
    """Whether a model folder must be (re)trained; ``log`` says it is skipped, or why it is redone."""
    folder = recipe.paths.teacher(name) if stage == "teacher" else getattr(recipe.paths, stage)
    label = f"teacher {name}" if stage == "teacher" else stage
    reason = "--force" if force else why_stale(recipe, stage, name)
    if reason is None:
        log(f"{label}: finished in {folder}, skipping (--force retrains it)")
    elif reason != NOT_MADE:
        log(f"{label}: retraining {folder}: {reason}")
    return reason is not None


def why_stale(recipe: Recipe, stage: str, name: str | None = None) -> str | None:
    """Why ``stage``'s output for ``recipe`` must be (re)made; None when it is finished and current.

    ``stage`` is ``corpus``, ``tokenizer``, ``teacher`` (with the teacher's ``name``), ``student``,
    ``baseline``, ``evaluate`` or ``samples``. :data:`NOT_MADE` means there is no finished output.
    """
    paths = recipe.paths
    if stage == "corpus":
        return corpus_stale(recipe)
    if stage == "tokenizer":
        return tokenizer_stale(recipe)
    if stage == "teacher":
        return model_stale(paths.teacher(name), expected_info(recipe, "teacher", name))
    if stage in ("student", "baseline"):
        folder = paths.student if stage == "student" else paths.baseline
        return model_stale(folder, expected_info(recipe, stage))
    if stage == "evaluate":
        return _stamp_stale(recipe, stage, [paths.report / "report.json", paths.report / "report.md"],
                            "models and evaluation settings")
    if stage == "samples":
        return _stamp_stale(recipe, stage, [paths.report / "samples.md"], "student and generate settings")
    raise ValueError(f"unknown stage {stage!r}")
