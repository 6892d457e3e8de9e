"""Typed presets: dataclasses filled from YAML, with `--set a.b=value` overrides.

A preset is one `Preset` dataclass whose fields are the nested `Config` dataclasses of the components
(`FaceAnalyzer.Config`, `M2Encoder.Config`, ...). YAML is only a way to fill them: every key is checked against the
dataclass, every value against the field's type, and a mistake names the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from facegen.data.config import DataConfig
from facegen.errors import ConfigError
from facegen.eval.config import EvalConfig
from facegen.face.analyzer import FaceAnalyzer
from facegen.models.clip_scorer import ClipScorer
from facegen.models.faceclip import FaceCLIPEncoder
from facegen.models.m2 import M2Encoder
from facegen.train.config import TrainConfig

PRESETS = ("tiny", "dreamidentity-sd21", "faceclip-sdxl")


@dataclass
class GenerationConfig:
    """Sampling defaults of one method (the CLI, the Python API and the HTTP service fall back to these)."""

    steps: int = 30
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    negative_prompt: str = ""
    scheduler: str = "ddim"  # ddim | euler | the base model's own ("default")


@dataclass
class Preset:
    name: str = "custom"
    # Model references: a hub id, a local diffusers directory, or "tiny:sd21" / "tiny:sdxl" (built offline).
    sd21: str = "tiny:sd21"
    sdxl: str = "tiny:sdxl"
    # Optional sha256 pins: {"unet/diffusion_pytorch_model.safetensors": "<hex>", ...} checked after resolution.
    sha256: dict[str, str] = field(default_factory=dict)
    face: FaceAnalyzer.Config = field(default_factory=FaceAnalyzer.Config)
    m2: M2Encoder.Config = field(default_factory=M2Encoder.Config)
    faceclip_encoder: FaceCLIPEncoder.Config = field(default_factory=FaceCLIPEncoder.Config)
    clip: ClipScorer.Config = field(default_factory=ClipScorer.Config)
    dreamidentity: GenerationConfig = field(default_factory=GenerationConfig)
    faceclip: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(guidance_scale=5.0, width=864, height=1152, scheduler="euler"))
    data: DataConfig = field(default_factory=DataConfig)  # jobs/build_data.py
    train: TrainConfig = field(default_factory=TrainConfig)  # jobs/train_m2.py, jobs/train_faceclip.py
    eval: EvalConfig = field(default_factory=EvalConfig)  # jobs/evaluate.py


# ---------------------------------------------------------------------------------------------------------------
def load_preset(name_or_path: str | Path = "tiny", overrides: Sequence[str] = ()) -> Preset:
    """A shipped preset by name, or a YAML file; then `key.sub=value` overrides in order."""
    data = _read_yaml(name_or_path)
    for item in overrides:
        key, value = _split_override(item)
        _set_path(data, key, value)
    preset = from_dict(Preset, data, "")
    if preset.name == "custom":
        preset.name = Path(str(name_or_path)).stem
    return preset


def _read_yaml(name_or_path: str | Path) -> dict:
    name = str(name_or_path)
    if name in PRESETS:
        text = resources.files("facegen").joinpath("presets", f"{name}.yaml").read_text()
    elif name.endswith((".yaml", ".yml")) and Path(name).is_file():
        text = Path(name).read_text()
    else:
        raise ConfigError(f"unknown preset '{name}': use one of {', '.join(PRESETS)} or a .yaml file")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"preset {name} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name} must be a YAML mapping")
    return data


def _split_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_path(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{key}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------------------------
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


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)
