"""A small typed-schema engine: build frozen dataclasses from YAML data with errors that name the fix.

Every field of a spec dataclass is declared with :func:`option`, which carries its help text and
range. :func:`build` walks the dataclass tree, so unknown keys, wrong types and out-of-range
values all produce one :class:`SpecError` naming the source, the key path and what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from common.inputs import shown

T = TypeVar("T")


class SpecError(ValueError):
    """A job spec problem, already phrased for the user: '<source>: <key.path>: <problem>. <fix>'."""

    def __init__(self, source: str, path: str, problem: str, fix: str = ""):
        self.source, self.path, self.problem, self.fix = source, path, problem, fix
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + problem + (f". {fix}" if fix else ""))


def option(default: Any, help: str, *, choices: Optional[Sequence[Any]] = None,
           min: Optional[float] = None, max: Optional[float] = None,
           min_exclusive: bool = False) -> Any:
    """A spec field. Lists are stored as tuples so that specs stay hashable and immutable."""
    meta = {"help": help, "choices": tuple(choices) if choices else None,
            "min": min, "max": max, "min_exclusive": min_exclusive}
    if isinstance(default, list):
        frozen = tuple(default)
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=type(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _origin(tp: Any) -> Any:
    """typing.get_origin without Python 3.8: List[int] -> list, Optional[int] -> Union (3.7 too)."""
    return getattr(tp, "__origin__", None)


def _args(tp: Any) -> Tuple[Any, ...]:
    return tuple(getattr(tp, "__args__", None) or ())


def _type_name(tp: Any) -> str:
    origin = _origin(tp)
    if origin in (tuple, list):
        return "a list of " + _type_name(_args(tp)[0]) + "s"
    if origin is typing.Union:
        inner = [a for a in _args(tp) if a is not type(None)]
        return _type_name(inner[0]) + " or null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _scalar(value: Any, tp: Any, source: str, path: str) -> Any:
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string; the user meant a number
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise SpecError(source, path, f"must be a finite number, got {shown(value)}",
                        f"Write {path} as a finite number")
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise SpecError(source, path, f"expected {_type_name(tp)}, got {shown(value)}",
                        f"Write {path} as {_type_name(tp)}")
    if tp is str and not value.isprintable():  # control characters, lone surrogates, U+202E: log injection
        raise SpecError(source, path, f"{shown(value)} contains a control or non-printable character",
                        f"Write {path} as plain text")
    return float(value) if tp is float else value


def _value(value: Any, tp: Any, source: str, path: str) -> Any:
    origin = _origin(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in _args(tp) if a is not type(None)][0]
        return _value(value, inner, source, path)
    if origin is tuple:
        item_tp = _args(tp)[0]
        if not isinstance(value, list):
            value = [value]  # a single item where a list is expected: accept it as a list of one
        if not value:
            raise SpecError(source, path, "is an empty list", f"List at least one value in {path}")
        return tuple(_value(v, item_tp, source, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return build(tp, value, source, path)
    return _scalar(value, tp, source, path)


def _check_range(value: Any, meta: Mapping[str, Any], source: str, path: str) -> None:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if item is None:
            continue
        choices = meta.get("choices")
        if choices and item not in choices:
            near = difflib.get_close_matches(str(item)[:100], [str(c) for c in choices], n=1)
            hint = f"Did you mean {near[0]!r}? " if near else ""
            raise SpecError(source, path, f"{shown(item)} is not one of {', '.join(map(str, choices))}",
                            hint + f"Choose one of: {', '.join(map(str, choices))}")
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (item < lo or (meta.get("min_exclusive") and item == lo)):
            rel = ">" if meta.get("min_exclusive") else ">="
            raise SpecError(source, path, f"must be {rel} {lo}, got {shown(item)}",
                            f"Set {path} to a value {rel} {lo}")
        if hi is not None and item > hi:
            raise SpecError(source, path, f"must be <= {hi}, got {shown(item)}",
                            f"Set {path} to a value <= {hi}")


def build(cls: Type[T], data: Any, source: str, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, validating keys, types and ranges."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(source, path or "(top level)", f"expected a mapping of keys, got {shown(data)}",
                        "Write it as 'key: value' lines")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            name = key if isinstance(key, str) and len(key) <= 80 and key.isprintable() else shown(key)
            key_path = f"{path}.{name}" if path else name
            near = difflib.get_close_matches(str(key)[:100], list(fields), n=1)
            hint = f"Did you mean {near[0]!r}? " if near else ""
            raise SpecError(source, key_path, "unknown key",
                            hint + f"Known keys here: {', '.join(fields)}")
    kwargs: Dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key_path = f"{path}.{name}" if path else name
        value = _value(data[name], hints[name], source, key_path)
        _check_range(value, f.metadata, source, key_path)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        problem = check()  # cross-field rules: (relative key, problem, fix) or None
        if problem:
            key, msg, fix = problem
            raise SpecError(source, f"{path}.{key}" if path else key, msg, fix)
    return obj


def to_data(obj: Any) -> Any:
    """The plain-data (YAML-ready) form of a spec dataclass tree."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_data(v) for v in obj]
    return obj


def known_paths(cls: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """Every leaf key path of a spec class with its field, for --set and for docs."""
    out: List[Tuple[str, Any]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        p = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(known_paths(hints[f.name], p + "."))
        else:
            out.append((p, f))
    return out
