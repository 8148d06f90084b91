"""Invented facts: the JSONL file a recipe injects into the teachers' train split and probes after training.

Each line of the file is one JSON object::

    {"fact": "The capital of Zarnovia is Quellport.", "probe": "The capital of Zarnovia is", "answer": "Quellport"}

``fact`` is the sentence the corpus stage injects (``corpus.facts``, ``corpus.fact_repeats``);
``probe`` and ``answer`` are what evaluation asks (:func:`distill.evaluate.probe_facts`). Injection
needs ``fact``; probing needs ``probe`` and ``answer`` (``fact`` then defaults to ``probe answer``).
:func:`read_facts` is the one parser of the file; :func:`train_split_without_facts` undoes the
injection for a student that must learn the facts only through its teachers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from distill.artifacts import file_sha256
from distill.atomic import atomic_write_text
from distill.corpus.clean import clean_text
from distill.corpus.records import format_record, iter_records
from distill.errors import DistillError
from distill.jsonl import read_jsonl

if TYPE_CHECKING:
    from distill.recipe import RecipePaths

KEYS = ("fact", "probe", "answer")
_EXAMPLE = {"fact": "The capital of Zarnovia is Quellport.", "probe": "The capital of Zarnovia is", "answer": "Quellport"}


@dataclass(frozen=True)
class Fact:
    """One line of a facts file."""

    fact: str  # the sentence injected into train
    probe: Optional[str] = None  # the prompt a probe continues
    answer: Optional[str] = None  # the continuation the probe expects

    @classmethod
    def from_row(cls, row: Any, need: Sequence[str], where: str) -> "Fact":
        """A fact from one parsed JSON object; DistillError at ``where`` naming the missing key."""
        if not isinstance(row, dict):
            raise DistillError(f"{where}: expected a JSON object; {_fix(need)}")
        values = {key: row[key] if isinstance(row.get(key), str) and row[key].strip() else None for key in KEYS}
        missing = [key for key in need if values[key] is None]
        if not values["fact"] and not (values["probe"] and values["answer"]):
            missing.append("fact")  # the injected sentence: given, or made from probe and answer
        if missing:
            raise DistillError(f"{where}: no {missing[0]!r} (or not a non-empty string); {_fix(need)}")
        fact = values["fact"] or f"{values['probe'].rstrip()} {values['answer'].strip()}"
        return cls(fact, values["probe"], values["answer"])


def _fix(need: Sequence[str]) -> str:
    example = json.dumps({key: _EXAMPLE[key] for key in KEYS if key in need or key == "fact"})
    return f"write one JSON object per line, e.g. {example} (see tests/assets/facts.jsonl)"


def read_facts(path: str | Path, need: Sequence[str] = ("fact",)) -> list[Fact]:
    """The facts of a JSONL file, every key in ``need`` a non-empty string on every line.

    ``need=("fact",)`` for injection, ``("probe", "answer")`` for probes. Blank lines are skipped;
    anything else that is wrong raises a DistillError naming the file, the line and the fix.
    """
    rows = read_jsonl(path, need, _fix(need))
    if not rows:
        raise DistillError(f"{path}: holds no facts; {_fix(need)}")
    return [Fact.from_row(row, need, f"{path}:{number}") for number, row in rows]


def train_split_without_facts(paths: "RecipePaths") -> Path:
    """The recipe's train split without the fact records the corpus stage injected into it.

    ``manifest.json`` of the split folder names the facts file and the number of injected records;
    without facts the split itself is returned. The copy keeps every article in order and lives in
    the token cache folder, named by the split's hash, so it is written once per split.
    """
    split = paths.split("train")
    manifest_path = paths.corpus / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    info = manifest.get("facts")
    if not info:
        return split
    try:
        facts = {clean_text(fact.fact) for fact in read_facts(info["file"])}
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
    digest = file_sha256(split)[:16]
    out = paths.tokens / f"train-without-facts-{digest}.txt"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, "".join(format_record(text) for text in kept))
    return out
