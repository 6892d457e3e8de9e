"""FaceT5-FLUX's sizes: the official encoder (bytedance/FaceCLIP @ a984887, `core/face_t5/face_t5.py`) as its
checkpoint `face_t5_encoder.pt` holds it. Plain data: importing it loads no torch."""
from __future__ import annotations

from dataclasses import dataclass, field

from facegen.core.errors import ConfigError
from facegen.core.methods.base import MethodConfig, SamplingConfig
from facegen.core.methods.faceclip.config import OfficialFuserConfig
from facegen.core.models.config import FaceViTConfig

# The official inference script's negative text (infer_face_t5_flux.py), said with the all-zero face.
OFFICIAL_NEGATIVE = (
    "digital painting, 3d render, CGI, cartoon, anime, unreal, stylized, overexposed, glossy skin, wearing mask, "
    "looking away from the camera, wearing glasses, wearing sunglasses, nude, worst quality, low quality, normal "
    "quality, nsfw, abstract, glitch, deformed, mutated, ugly, disfigured, text, watermark, bad hands, error, jpeg "
    "artifacts, blurry, missing fingers, poorly drawn face, ugly eyes, imperfect eyes, deformed pupils, deformed iris, "
    "bad anatomy")


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
    act: str = "quick_gelu"


@dataclass
class FaceT5Config:
    t5: T5StackConfig = field(default_factory=T5StackConfig)
    clip_l: ClipLConfig = field(default_factory=ClipLConfig)
    vit: FaceViTConfig = field(default_factory=lambda: FaceViTConfig(embed_dim=768, depth=24, num_heads=8))
    # GroundingDINO's feature enhancer at d_model = t5.d_model: 6 layers; face self-attention 8 heads, FFN 2048 (not
    # deformable, unlike FaceCLIP-SDXL's; `points` unused); text enhancer 4 heads, FFN 1024; bi-attention 1024, 4 heads.
    fuser: OfficialFuserConfig = field(default_factory=OfficialFuserConfig)
    face_crop: int = 448  # the aligned crop the face ViT is fed (resized to vit.img_size), as FaceCLIP's


@dataclass
class FaceT5TrainConfig:
    """Fine-tuning FaceT5-FLUX (the flow-matching loss FLUX trains with): LoRA adapters on the DiT's attention and
    the fuser trainable; the T5 stack, CLIP-L and the face ViT frozen (as the official training freezes them)."""

    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                     "to_add_out")
    train_fuser: bool = True
    cond_dropout: float = 0.1  # zero face + empty prompt, for classifier-free guidance
    logit_mean: float = 0.0  # timesteps drawn logit-normally (SD3 / FLUX fine-tuning's default weighting)
    logit_std: float = 1.0


@dataclass
class FaceT5FluxConfig(MethodConfig):
    MAX_MEGAPIXEL_STEPS = 105.0  # 2 images of 864×1152 at 50 steps (and their decoding): a 12 B DiT is ~4× SDXL's UNet per pixel-step
    # A FLUX.1-dev-layout model: a hub id, a local diffusers directory, "tiny:flux" or "random:flux-dev". Only its
    # transformer, VAE, scheduler, CLIP-L and tokenizers are read: the FaceT5 encoder replaces its T5 encoder.
    base_model: str = "tiny:flux"
    dtype: str = "auto"
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(
        steps=50, guidance_scale=3.5, width=864, height=1152, scheduler="default", negative_prompt=OFFICIAL_NEGATIVE))
    # FLUX.1-dev's distilled guidance input (the transformer's `guidance`): the official script gives 1.0 and guides
    # with true classifier-free guidance instead (sampling.guidance_scale: diffusers' true_cfg_scale, 3.5).
    distilled_guidance: float = 1.0
    encoder: FaceT5Config = field(default_factory=FaceT5Config)
    train: FaceT5TrainConfig = field(default_factory=FaceT5TrainConfig)

    @property
    def face_size(self) -> int:
        return self.encoder.face_crop

    def check_model(self, model: str | None, face=None) -> None:
        """The published encoder's fuser has no initialisation from FLUX's weights: a real base model needs a
        converted or fine-tuned encoder (tiny and random base models may start fresh, for tests), and that is
        insightface-profile only (MethodConfig.check_model)."""
        if not (model or self.model) and not self.base_model.startswith(("tiny:", "random:")):
            if face is not None:
                from facegen.core.face.registry import check_insightface_profile

                check_insightface_profile(face, "FaceT5-FLUX (its encoder is ByteDance's published one)")
            raise ConfigError("methods.facet5 needs a converted FaceT5 encoder: give --model DIR (or facet5=DIR when "
                              "serving; see `python -m facegen convert facet5-flux --help`)")
        super().check_model(model, face)
