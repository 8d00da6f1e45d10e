"""Dicts from YAML/JSON into typed dataclasses, with errors that name the key, the file and the fix.

One small checker serves the task registry, the run config and the ticket files, so every file a user
writes is held to the same rules: unknown keys fail with the closest valid key, wrong types (and an
infinite or NaN number) fail quoting the value, and `__post_init__` checks ranges.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A user-written file or flag is wrong; the message says where and how to fix it."""


def closest(name: str, options: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for the closest option, or a list of the valid ones."""
    options = sorted(options)
    match = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid: {', '.join(options)})"


def load_yaml(path: str | Path) -> Any:
    """Read YAML with the safe loader: tags that would construct Python objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: not valid YAML: {first}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from `data`, checking keys and types recursively.

    Args:
        cls: the dataclass to build.
        data: a mapping, as read from YAML or JSON.
        where: what to name in errors, e.g. "configs/quickstart.yaml: train".
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {_quote(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{closest(str(key), fields)}")
        kwargs[key] = _convert(hints[key], value, _join(where, key))
    required = (f.name for f in fields.values() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where}: {err}") from None


def _join(where: str, key: object) -> str:
    """`file.yaml` + `train` -> `file.yaml: train`; `file.yaml: train` + `lr` -> `file.yaml: train.lr`."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = {}
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ConfigError as err:
                errors[option] = str(err)
        # The option of the value's own kind (a mapping for `dict | list`) names the deepest mistake.
        same_kind = [e for option, e in errors.items() if isinstance(value, _container(option))]
        explained = same_kind if len(same_kind) == 1 else list(errors.values())
        raise ConfigError(explained[0] if len(explained) == 1 else f"{where}: {_quote(value)} is not {_name(hint)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}{closest(str(value), map(str, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_quote(value)}")
        item = args[0] if args else Any
        if item in (int, str) and all(type(v) is item for v in value):  # fast: a ticket lists thousands of units
            converted = list(value)
        else:
            converted = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_quote(value)}")
        return {str(k): _convert(args[1] if args else Any, v, _join(where, k)) for k, v in value.items()}
    return _scalar(hint, value, where)


def _container(hint: Any) -> tuple[type, ...]:
    """The Python types a YAML/JSON value of `hint` arrives as when it is a mapping or a list; () for scalars."""
    if dataclasses.is_dataclass(hint) or get_origin(hint) is dict:
        return (dict,)
    return (list, tuple) if get_origin(hint) in (list, tuple) else ()


def _quote(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut short: an error stays one readable line even for a list of 1,536 neurons."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _scalar(hint: type, value: Any, where: str) -> Any:
    if hint is float and (number := _float(value)) is not None:
        if not math.isfinite(number):  # `.inf` passes every `> 0` range check
            raise ConfigError(f"{where}: expected a finite number, got {_quote(value)}")
        return number
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {_name(hint)}, got {_quote(value)}")


def _float(value: Any) -> float | None:
    """A number as a float, or None; a string too, as YAML 1.1 reads `3e-5` (no dot) as one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def to_dict(obj: Any) -> Any:
    """The inverse of `from_dict`: plain dicts and lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
