"""The method registry: one entry per method, and everything that offers a choice of method iterates it — the CLI's
--method, the HTTP schema's `method`, the training jobs, evaluation and the service's deployments.

Adding a method: a folder facegen/core/methods/<name>/ (see base.py) and one line in REGISTRY below; the same method
on another base-model family (facegen.core.bases): one more `Method` entry with that `base`.
"""
from __future__ import annotations

from facegen.core.errors import ConfigError
from facegen.core.methods.base import Method
from facegen.core.methods.dreamidentity import METHOD as DREAMIDENTITY
from facegen.core.methods.dreamidentity import METHOD_SDXL as DREAMIDENTITY_SDXL
from facegen.core.methods.faceclip import METHOD as FACECLIP
from facegen.core.methods.facet5 import METHOD as FACET5

REGISTRY: dict[str, Method] = {m.name: m for m in (DREAMIDENTITY, FACECLIP, FACET5, DREAMIDENTITY_SDXL)}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(NAMES)})")
    return REGISTRY[name]


def load_pipeline(name: str, preset, model=None, torch_dtype=None, device=None, face_analyzer=None):
    """The pipeline of method `name` as preset (name, file or Preset) configures it; `model` = an encoder exported
    by a training job, replacing the preset's; dtype/device as `facegen.core.devices.resolve` decides unless given;
    `face_analyzer` = one already built from the preset's `face` section, reused rather than loaded again."""
    return get_method(name).load_pipeline(preset, model=model, torch_dtype=torch_dtype, device=device,
                                          face_analyzer=face_analyzer)


__all__ = ["NAMES", "REGISTRY", "Method", "get_method", "load_pipeline"]
