"""Where a method runs and in what precision: one decision, used by the CLI, the jobs, evaluation and the service.

`methods.<name>.dtype` is auto | fp32 | fp16 | bf16. auto: fp16 on CUDA (SD2.1 and SDXL alike — SDXL's VAE is
decoded in fp32 by diffusers because its config says `force_upcast`, the fp16-overflow fix), fp32 on a CPU (fp16
convolutions are slow or missing there). Encoders (M², FaceCLIP, the face ViT) stay fp32: they are small next to
the UNet and their LayerNorm/BatchNorm heads are what overflows first in fp16.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from facegen.core.errors import ConfigError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype  # the diffusion model (UNet, VAE, text encoders)
    encoder_dtype: torch.dtype = torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(setting: str = "auto", device: torch.device | str | None = None, key: str = "dtype") -> Placement:
    """The placement for a dtype setting on a device (default: CUDA when torch sees one). Pure: ask it what it
    would pick for any device, no GPU needed."""
    device = torch.device(device) if device is not None else default_device()
    if setting == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    elif setting in DTYPES:
        dtype = DTYPES[setting]
    else:
        raise ConfigError(f"{key} '{setting}': use auto, {', '.join(DTYPES)}")
    return Placement(device=device, dtype=dtype)

