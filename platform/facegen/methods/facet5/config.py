"""FaceT5-FLUX's sizes: the official encoder (bytedance/FaceCLIP @ a984887, `core/face_t5/face_t5.py`) as its
checkpoint `face_t5_encoder.pt` holds it. Plain data: importing it loads no torch."""
from __future__ import annotations

from dataclasses import dataclass, field

from facegen.methods.faceclip.config import OfficialFuserConfig
from facegen.models.config import FaceViTConfig


@dataclass
class T5StackConfig:
    """The T5 v1.1 XXL encoder stack (FlashT5's names): pre-norm RMS layer norms, gated-GELU (tanh) feed-forward,
    T5 relative position buckets computed in block 0 and shared, attention scale 1.0, no attention mask."""

    vocab_size: int = 32128
    d_model: int = 4096
    layers: int = 24
    heads: int = 64
    d_kv: int = 64
    d_ff: int = 10240
    buckets: int = 32
    max_distance: int = 128
    max_length: int = 512  # prompts are padded to this: prompt_embeds are B×512×d_model
    eps: float = 1e-6


@dataclass
class ClipLConfig:
    """FLUX.1-dev's CLIP-L text encoder (transformers' CLIPTextModel): its pooler output is the pooled conditioning."""

    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    vocab_size: int = 49408
    max_length: int = 77


@dataclass
class FaceT5Config:
    t5: T5StackConfig = field(default_factory=T5StackConfig)
    clip_l: ClipLConfig = field(default_factory=ClipLConfig)
    vit: FaceViTConfig = field(default_factory=lambda: FaceViTConfig(embed_dim=768, depth=24, num_heads=8))
    # GroundingDINO's feature enhancer at d_model = t5.d_model: 6 layers; face self-attention 8 heads, FFN 2048 (not
    # deformable, unlike FaceCLIP-SDXL's; `points` unused); text enhancer 4 heads, FFN 1024; bi-attention 1024, 4 heads.
    fuser: OfficialFuserConfig = field(default_factory=OfficialFuserConfig)
    face_crop: int = 448  # the aligned crop the face ViT is fed (resized to vit.img_size), as FaceCLIP's
