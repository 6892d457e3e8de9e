"""Settings of the shared model components (plain data: importing it loads no torch)."""
from __future__ import annotations

from dataclasses import dataclass

# arcface_torch's named backbones (backbones/__init__.py): embed_dim, depth, heads.
ARCHS = {"vit_t": (256, 12, 8), "vit_s": (512, 12, 8), "vit_b": (512, 24, 8), "vit_l": (768, 24, 8)}
TINY_CLIP = "facegen-tiny-clip"


@dataclass
class FaceViTConfig:
    img_size: int = 112  # the aligned face crop the ViT reads (ArcFace's 112×112)
    patch_size: int = 9
    embed_dim: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    num_features: int = 512  # arcface_torch's num_classes: the identity vector's size
    weights: str | None = None  # an arcface_torch checkpoint (.pt/.pth/.safetensors) to start from
    weights_sha256: str | None = None  # its pin

    @classmethod
    def named(cls, arch: str, **kw) -> FaceViTConfig:
        dim, depth, heads = ARCHS[arch]
        return cls(embed_dim=dim, depth=depth, num_heads=heads, **kw)


@dataclass
class ClipScorerConfig:
    model: str = TINY_CLIP
    pretrained: str | None = None  # an open_clip pretrained tag or a checkpoint file; None = random (tiny only)
    seed: int = 0
    # What "S*" reads as wherever a prompt is scored or used as a text target (data filter, CLIP-T, FaceCLIP's
    # text alignment): one setting, so every score reads the same words.
    person_words: str = "a person"  # = facegen.core.prompts.PERSON_WORDS
