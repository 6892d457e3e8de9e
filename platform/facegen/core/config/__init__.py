"""Typed presets: dataclasses filled from YAML, with `--set a.b=value` overrides.

A preset names the face stack and the CLIP scorer every method shares, one section per method it offers
(`methods.<name>`: base model, encoder, sampling, training — the method's own dataclass from the registry) and the
jobs' sections (data, train, eval). YAML is only a way to fill them: every key is checked against the dataclass,
every value against the field's type, and a mistake names the key. A method a preset does not configure is not
offered by anything built from it. `extends: [preset, ...]` starts from other presets (merged in order).

Importing this module loads no torch: only the dataclasses of every section.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from facegen.core.config.data import DataConfig
from facegen.core.config.eval import EvalConfig
from facegen.core.config.train import TrainConfig
from facegen.core.errors import ConfigError
from facegen.core.face.config import FaceAnalyzerConfig
from facegen.core.methods import NAMES, REGISTRY
from facegen.core.models.config import ClipScorerConfig
from facegen.core.typed import from_dict

TINY_PREFIX = "tiny:"


def shipped_presets() -> tuple[str, ...]:
    files = resources.files("facegen").joinpath("presets").iterdir()
    return tuple(sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml")))


@dataclass
class Preset:
    name: str = "custom"
    # Tiny random base models are for tests and demos: a preset may name one only if it says so here, so a real
    # preset can never fall back to one silently.
    allow_tiny: bool = False
    face: FaceAnalyzerConfig = field(default_factory=FaceAnalyzerConfig)
    clip: ClipScorerConfig = field(default_factory=ClipScorerConfig)
    methods: dict[str, Any] = field(default_factory=dict)  # name → the method's section (its registry config type)
    data: DataConfig = field(default_factory=DataConfig)  # jobs/build_data.py
    train: TrainConfig = field(default_factory=TrainConfig)  # jobs/train_m2.py, jobs/train_faceclip.py
    eval: EvalConfig = field(default_factory=EvalConfig)  # jobs/evaluate.py

    @property
    def method_names(self) -> list[str]:
        """The methods this preset offers, in registry order."""
        return [m for m in NAMES if m in self.methods]

    def method(self, name: str):
        """The section of a method this preset configures; a ConfigError names what it offers otherwise."""
        if name not in REGISTRY:
            raise ConfigError(f"unknown method '{name}' (known: {', '.join(NAMES)})")
        if name not in self.methods:
            offered = ", ".join(self.method_names) or "none"
            raise ConfigError(f"preset '{self.name}' does not configure method '{name}' (it offers: {offered})")
        return self.methods[name]


# ---------------------------------------------------------------------------------------------------------------
def load_preset(name_or_path: str | Path = "tiny", overrides: Sequence[str] = ()) -> Preset:
    """A shipped preset by name, or a YAML file; then `key.sub=value` overrides in order."""
    data = _read_yaml(name_or_path, seen=())
    for item in overrides:
        key, value = _split_override(item)
        _set_path(data, key, value)
    raw_methods = data.pop("methods", None) or {}
    if not isinstance(raw_methods, dict):
        raise ConfigError("'methods' must be a mapping of method name → section")
    preset = from_dict(Preset, data, "")
    for name, section in raw_methods.items():
        if name not in REGISTRY:
            raise ConfigError(f"unknown method 'methods.{name}' (known: {', '.join(NAMES)})")
        preset.methods[name] = from_dict(REGISTRY[name].config, section, f"methods.{name}")
        preset.methods[name].settle_face_stack(preset.face)
    if preset.name == "custom":
        preset.name = Path(str(name_or_path)).stem
    if preset.data.method is None:  # the first method whose base can draw the self-augmented set by name
        preset.data.method = next((m for m in preset.method_names if REGISTRY[m].base in ("sd21", "sdxl")), None)
    _check_no_silent_tiny(preset)
    return preset


def as_preset(preset: Preset | str | Path, overrides: Sequence[str] = ()) -> Preset:
    return preset if isinstance(preset, Preset) else load_preset(preset, overrides)


def _check_no_silent_tiny(preset: Preset) -> None:
    if preset.allow_tiny:
        return
    for name, section in preset.methods.items():
        if section.base_model.startswith(TINY_PREFIX):
            raise ConfigError(
                f"methods.{name}.base_model is '{section.base_model}', a tiny random model, in preset '{preset.name}': "
                f"name the real model (a hub id or a local directory), or set allow_tiny: true in the preset")


def _read_yaml(name_or_path: str | Path, seen: tuple[str, ...]) -> dict:
    name = str(name_or_path)
    if name in seen:
        raise ConfigError(f"preset {name} extends itself ({' → '.join((*seen, name))})")
    if name in shipped_presets():
        text = resources.files("facegen").joinpath("presets", f"{name}.yaml").read_text()
    elif name.endswith((".yaml", ".yml")) and Path(name).is_file():
        text = Path(name).read_text()
    else:
        raise ConfigError(f"unknown preset '{name}': use one of {', '.join(shipped_presets())} or a .yaml file")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"preset {name} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name} must be a YAML mapping")
    bases = data.pop("extends", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        _merge(merged, _read_yaml(base, (*seen, name)))
    _merge(merged, data)
    return merged


def _merge(into: dict, data: dict) -> None:
    """Deep merge: mappings merge key by key, anything else replaces."""
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dataclasses.replace(value) if dataclasses.is_dataclass(value) else value


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
