"""Typed configuration from plain data: `from_dict(SomeConfig, mapping, "dotted.path")` checks every key against the
dataclass and every value against the field's type, and a mistake names the dotted key. Presets, exported model
configs and saved pipeline components are all read through it. It imports nothing of facegen but its errors, so any
module may use it without an import cycle.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from facegen.core.errors import ConfigError


def from_dict(cls: type, data: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and value; errors name the dotted key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{path or 'preset'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" under '{path}'" if path else ""
        raise ConfigError(f"unknown config key '{_join(path, unknown[0])}' (valid keys{where}: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, _join(path, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"bad value for '{path}': {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"bad value for '{path}': expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        out = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"bad value for '{path}': expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"bad value for '{path}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"bad value for '{path}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as text
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"bad value for '{path}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"bad value for '{path}': expected a string, got {value!r}")
    raise ConfigError(f"'{path}': unsupported config type {tp}")
