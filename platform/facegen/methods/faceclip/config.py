"""FaceCLIP's preset section (`methods.faceclip`): plain data, importing it loads no torch."""
from __future__ import annotations

from dataclasses import dataclass, field

from facegen.methods.base import SamplingConfig
from facegen.models.config import FaceViTConfig


@dataclass
class FaceCLIPEncoderConfig:
    vit: FaceViTConfig = field(default_factory=FaceViTConfig)
    face_embedding_dim: int = 512  # the face analyzer's recognizer vector
    fusion_layers: int = 4
    prefix: str = "photo of a id person."
    id_word: str = "id"
    clip_embed_dim: int = 768  # the CLIP image embedding the alignment loss aims at (ViT-L-14: 768)
    seed: int = 0


@dataclass
class FaceCLIPTrainConfig:
    stage: str = "align"  # align: alignment loss only; diffusion: diffusion loss + align_weight · alignment loss
    unet: str = "frozen"  # frozen | lora | full (diffusion stage)
    lora_rank: int = 8
    align_weight: float = 0.1
    cond_dropout: float = 0.1  # zero face + empty prompt, for classifier-free guidance
    face_weight: float = 1.0  # alignment-loss weights per term
    text_weight: float = 1.0
    image_weight: float = 1.0
    train_text: bool = False  # fine-tune the text towers too (otherwise frozen)
    train_vit: bool = False

    STAGES = ("align", "diffusion")
    UNET_MODES = ("frozen", "lora", "full")


@dataclass
class FaceCLIPConfig:
    MAX_MEGAPIXEL_STEPS = 220.0  # one request's default work budget: 4 images of 1024² at 50 steps
    # An SDXL-layout model: a hub id, a local diffusers directory, "tiny:sdxl" or "random:sdxl-base".
    base_model: str = "tiny:sdxl"
    sha256: dict[str, str] = field(default_factory=dict)  # pins for base_model's files (relative path → hex)
    model: str | None = None  # an exported FaceCLIP encoder (a training job's <output>/model) instead of a fresh one
    model_sha256: dict[str, str] = field(default_factory=dict)  # pins for `model`'s files (e.g. model.safetensors)
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16 (auto: fp16 on CUDA with the VAE decoded in fp32, fp32 on CPU)
    encoder: FaceCLIPEncoderConfig = field(default_factory=FaceCLIPEncoderConfig)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(
        guidance_scale=5.0, width=864, height=1152, scheduler="euler"))
    train: FaceCLIPTrainConfig = field(default_factory=FaceCLIPTrainConfig)
