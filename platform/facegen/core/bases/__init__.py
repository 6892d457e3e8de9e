"""Base models as their own layer: one class per family a method can be built on — SD 2.1, SDXL, FLUX.1 — holding
what the family is, whichever method uses it: how its weights load, the diffusers pipeline that denoises with it
(plain and under a ControlNet), the conditioning it takes, its VAE scale, size multiple and native canvas, its
ControlNet class and the training objective of its denoiser. A method names its base (`Method.base`); no method
re-declares one. Importing this package loads no torch: the families import diffusers when they load something.
"""
from __future__ import annotations

from facegen.core.bases.family import BaseFamily
from facegen.core.bases.flux import FLUX
from facegen.core.bases.sd21 import SD21
from facegen.core.bases.sdxl import SDXL
from facegen.core.errors import ConfigError

FAMILIES: dict[str, BaseFamily] = {f.config.name: f for f in (SD21, SDXL, FLUX)}


def get_base(name: str) -> BaseFamily:
    if name not in FAMILIES:
        raise ConfigError(f"unknown base model family '{name}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


__all__ = ["FAMILIES", "FLUX", "SD21", "SDXL", "BaseFamily", "get_base"]
