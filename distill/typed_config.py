"""Plain data (as ``yaml.safe_load`` gives it) into typed dataclasses, and back.

:func:`from_plain` converts a mapping into a dataclass by its type hints, recursing into nested
dataclasses, lists, ``Optional`` and ``Literal`` fields. It never stops at the first problem: each
one is appended to ``problems`` as a ``key: message`` line naming the value and the fix, and the
bad value is replaced by :data:`INVALID` so that later checks can skip it (:func:`is_valid`).
:func:`apply_override` sets a dotted ``key=value`` in the plain data before conversion, so an
override is checked like the file itself. Fields whose metadata is :data:`INTERNAL` are set by
the caller, never read from the data or written back by :func:`to_plain`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import yaml

from distill.counts import parse_count
from distill.errors import DistillError

# Fields marked internal are set by the loader, never read from YAML.
INTERNAL = {"internal": True}


class _Invalid:
    """Stands in for a value that failed its type check, so later checks can skip it."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Any = _Invalid()


def is_valid(*values: Any) -> bool:
    """Whether none of ``values`` is :data:`INVALID` (failed its type check)."""
    return not any(value is INVALID for value in values)


def resolve_paths(obj: Any) -> None:
    """Make every Path field absolute, relative to the current working directory."""
    if isinstance(obj, list):
        for item in obj:
            resolve_paths(item)
        return
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("internal"):
            continue
        if isinstance(value, Path):
            setattr(obj, f.name, (Path.cwd() / value.expanduser()).resolve() if not value.is_absolute() else value)
        else:
            resolve_paths(value)


def copy_plain(data: Any) -> Any:
    """A deep copy of plain data (dicts and lists), so conversion never changes the caller's."""
    if isinstance(data, dict):
        return {k: copy_plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [copy_plain(v) for v in data]
    return data


_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _split_key(key: str) -> list[str]:
    return [m.group(1) or m.group(2) for m in _TOKEN.finditer(key)]


def apply_override(data: dict, override: str, problems: list[str]) -> None:
    """Set ``a.b.0.c=value`` in the plain data (list items by index or ``name``); the normal checks then see the result."""
    if "=" not in override:
        problems.append(f"override {override!r}: expected key=value, e.g. student.alpha=0.7")
        return
    key, raw = override.split("=", 1)
    parts = _split_key(key.strip())
    if not parts:
        problems.append(f"override {override!r}: empty key; expected key=value, e.g. student.alpha=0.7")
        return
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part)
            if index is None:
                names = [item.get("name") for item in node if isinstance(item, dict) and item.get("name")]
                hint = f" or a name ({', '.join(map(str, names))})" if names else ""
                problems.append(f"override {override!r}: {where}: pick an index 0..{len(node) - 1}{hint}")
                return
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        else:
            problems.append(f"override {override!r}: {'.'.join(parts[:depth])} is a value, not a section")
            return


def _list_index(items: list, part: str) -> int | None:
    if part.isdigit():
        index = int(part)
        return index if index < len(items) else None
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return index
    return None


def did_you_mean(word: str, options: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options``, else the valid ones, to end a message."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid: {', '.join(options)}" if options else ""


def from_plain(cls: type, data: Any, key: str, problems: list[str]) -> Any:
    """Convert a mapping into dataclass ``cls``, recording problems instead of stopping at the first."""
    where = key or "recipe"
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping of keys, got {_show(data)}")
        return INVALID
    hints = typing.get_type_hints(cls)
    known = [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    names = [f.name for f in known]
    prefix = f"{key}." if key else ""
    for name in data:
        if name not in names:
            problems.append(f"{prefix}{name}: unknown key{_suggest_key(str(name), cls, hints, known)}")
    kwargs = {}
    for f in known:
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{prefix}{f.name}", problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{prefix}{f.name}: missing; add it ({_describe(hints[f.name])})")
            kwargs[f.name] = INVALID
    return cls(**kwargs)


def _suggest_key(name: str, cls: type, hints: dict, known: list) -> str:
    names = [f.name for f in known]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    # A key that belongs one level down (``teachers.0.lr`` for ``teachers.0.training.lr``).
    for f in known:
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub) and name in {g.name for g in dataclasses.fields(sub)}:
            return f"; did you mean '{f.name}.{name}'?"
    return f"; valid keys: {', '.join(names)}"


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + " | ".join(map(str, args))
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a) for a in inner) + (" or null" if len(inner) < len(args) else "")
    if origin is list:
        if dataclasses.is_dataclass(args[0]):
            return "a list of mappings; see recipes/tiny.yaml"
        return f"a list of {_describe(args[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping; see recipes/tiny.yaml"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}.get(tp, str(tp))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], key, problems)
        return value
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        choices = [str(a) for a in args]
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(f"{key}: {_show(value)} is not one of {' | '.join(choices)}{hint}")
        return INVALID
    if origin in (list, tuple):
        if not isinstance(value, list):
            problems.append(f"{key}: expected {_describe(tp)}, got {_show(value)}")
            return INVALID
        return [_coerce(item, args[0], f"{key}[{i}]", problems) for i, item in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_plain(tp, value, key, problems)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return parse_count(value, key)
            except DistillError:
                pass  # not a count: reported below as the wrong type
    elif tp is float:
        number = None
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str):
                number = float(value.replace("_", ""))
        except (ValueError, OverflowError):
            pass
        if number is not None:
            if math.isfinite(number):
                return number
            # inf and nan pass every "> 0" or range check that follows, so they are refused here, for every float.
            problems.append(f"{key}: {_show(value)} is not a finite number; give a number such as 0.5 or 3e-4")
            return INVALID
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
    elif tp is Any:
        return value
    problems.append(f"{key}: expected {_describe(tp)}, got {_show(value)}")
    return INVALID


def to_plain(obj: Any) -> Any:
    """A dataclass as plain YAML/JSON-ready data: paths as strings, internal fields left out."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal")
        }
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
