"""facegen's export format for trained encoders: config.json (the dataclass config) + model.safetensors.

Both files are written under temporary names and renamed, so a reader never sees half an export. Torch loads only
when weights are read or written: the CLI and the service builder check a model directory before anything heavy.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from facegen.core.errors import ModelNotFound

if TYPE_CHECKING:
    import torch
    from torch import nn

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def save_export(directory: str | os.PathLike, model: nn.Module, config) -> Path:
    """Write `config` (a dataclass; a face ViT checkpoint path in it is dropped) and every weight of `model`."""
    return write_export(directory, model.state_dict(), config, type(model).__name__)


def write_export(directory: str | os.PathLike, state: dict[str, torch.Tensor], config, class_name: str) -> Path:
    """An export from a state dict: config.json (`config` as a dict, `_class_name` first) + model.safetensors."""
    from facegen.core.models.checkpoints import write_safetensors

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(config)
    if isinstance(data.get("vit"), dict):
        data["vit"]["weights"] = data["vit"]["weights_sha256"] = None  # the ViT's weights are in model.safetensors now
    name = class_name
    tmp_c = d / f".{CONFIG_NAME}.tmp"
    # streamed tensor by tensor (a converted FaceT5 encoder is 12 GB): the weights first, then the config that
    # makes the directory an export
    write_safetensors(d / WEIGHTS_NAME, state, {"format": "pt", "facegen": name})
    tmp_c.write_text(json.dumps({"_class_name": name, **data}, indent=2))
    os.replace(tmp_c, d / CONFIG_NAME)
    return d


def not_an_export(directory) -> str:
    """What to say of a model directory (or storage URI) that holds no export."""
    return f"{directory}: not an exported model (no {CONFIG_NAME}; use <train output>/model)"


def check_export(directory: str | os.PathLike) -> None:
    """A local model directory given by a user holds an export: said before any model loads (a base model takes
    seconds to minutes to load, and a service replica would fail only after it)."""
    if not (Path(directory).expanduser() / CONFIG_NAME).is_file():
        raise ModelNotFound(not_an_export(directory))


def export_config(directory: str | os.PathLike) -> dict | None:
    """An export's config.json as written, `_class_name` included (None when the directory holds none); an
    unreadable one is a ModelNotFound naming the file."""
    file = Path(directory).expanduser() / CONFIG_NAME
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ModelNotFound(f"{file} cannot be read as an export's config ({e}): export the model again") from None


def read_export(directory: str | os.PathLike, config_cls: type, what: str, key: str, weights: bool = True):
    """(directory, typed config, state dict — or None with weights=False) of an export; ModelNotFound if it is not
    one."""
    from safetensors.torch import load_file

    from facegen.core.typed import from_dict

    d = Path(directory).expanduser()
    if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
        raise ModelNotFound(f"{d} is not an exported {what} (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    data = export_config(d)
    data.pop("_class_name", None)
    return d, from_dict(config_cls, data, key), load_file(str(d / WEIGHTS_NAME)) if weights else None


def load_export_weights(model: nn.Module, directory: str | os.PathLike) -> None:
    """An export's weights into `model`, strictly (same keys, same shapes), one tensor at a time: peak memory is the
    model plus its largest tensor, not twice the model (an SDXL-sized FaceCLIP encoder is 4 GB in fp32). Weights
    left empty (built under accelerate's init_empty_weights) are assigned the file's tensors, in the file's dtype."""
    import torch
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    file = Path(directory).expanduser() / WEIGHTS_NAME
    own = model.state_dict()
    with safe_open(str(file), framework="pt") as f:
        keys = set(f.keys())
        missing, unexpected = sorted(own.keys() - keys), sorted(keys - own.keys())
        if missing or unexpected:
            raise ModelNotFound(f"{file} does not fit {type(model).__name__}: missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]}")
        with torch.no_grad():
            for key in keys:
                tensor = f.get_tensor(key)
                if tensor.shape != own[key].shape:
                    raise ModelNotFound(f"{file}: {key} has shape {tuple(tensor.shape)}, the model "
                                        f"{tuple(own[key].shape)}")
                if own[key].is_meta:
                    set_module_tensor_to_device(model, key, "cpu", value=tensor, dtype=tensor.dtype)
                else:
                    own[key].copy_(tensor)


SOURCES_NAME = "sources.json"


def from_published(directory: str | os.PathLike) -> bool:
    """Does this export hold published weights (a conversion, or a fine-tune that started from one)?"""
    return (Path(directory).expanduser() / SOURCES_NAME).is_file()


def write_sources(directory: str | os.PathLike, sources: dict[str, str]) -> None:
    """<export>/sources.json: the sha256 of each published file a conversion read (name → hex), as it read it."""
    (Path(directory) / SOURCES_NAME).write_text(json.dumps({"sha256": sources}, indent=2) + "\n")
