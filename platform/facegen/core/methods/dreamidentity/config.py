"""DreamIdentity's preset sections (`methods.dreamidentity`, `methods.dreamidentity-sdxl`): plain data, importing
it loads no torch."""
from __future__ import annotations

from dataclasses import dataclass, field

from facegen.core.methods.base import MethodConfig
from facegen.core.models.config import FaceViTConfig


@dataclass
class M2EncoderConfig:
    vit: FaceViTConfig = field(default_factory=FaceViTConfig)
    num_tokens: int = 2  # k
    token_dim: int | None = None  # the text encoder's token-embedding width; None = read from the base model
    hidden_dim: int = 1024
    taps: list[int] | None = None  # 1-based block indices; None = the quarters of the depth
    seed: int = 0  # random initialisation of untrained projectors, so a fresh encoder is reproducible


@dataclass
class DreamIdentityTrainConfig:
    reg_weight: float = 1e-4  # λ of the paper's λ·Σ‖s_i‖ term
    train_vit: bool = False  # fine-tune the face ViT too (otherwise frozen)


@dataclass
class DreamIdentityConfig(MethodConfig):
    MAX_MEGAPIXEL_STEPS = 80.0  # e.g. 4 images of 768² at 30 steps
    # An SD2.1-layout model: a hub id, a local diffusers directory, "tiny:sd21" or "random:sd21-base".
    base_model: str = "tiny:sd21"
    encoder: M2EncoderConfig = field(default_factory=M2EncoderConfig)
    train: DreamIdentityTrainConfig = field(default_factory=DreamIdentityTrainConfig)

    @property
    def face_size(self) -> int:
        return self.encoder.vit.img_size


@dataclass
class DreamIdentitySDXLConfig(DreamIdentityConfig):
    """`methods.dreamidentity-sdxl`: the same method on an SDXL-layout model; M²'s token width is CLIP-L's + bigG's."""

    MAX_MEGAPIXEL_STEPS = 160.0  # e.g. 4 images of 1024² at 30 steps, with room for control
    base_model: str = "tiny:sdxl"  # an SDXL-layout model: a hub id, a local diffusers directory, tiny:sdxl, random:sdxl-base
