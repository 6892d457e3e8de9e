"""FaceCLIP's preset section (`methods.faceclip`): plain data, importing it loads no torch."""
from __future__ import annotations

from dataclasses import dataclass, field

from facegen.core.errors import ConfigError
from facegen.core.methods.base import MethodConfig, SamplingConfig
from facegen.core.models.config import FaceViTConfig

ARCHITECTURES = ("facegen", "official")


@dataclass
class OfficialTextTowerConfig:
    """One branch's open_clip text tower (defaults: ViT-L-14-quickgelu's, MetaCLIP weights)."""

    width: int = 768
    heads: int = 12
    layers: int = 12
    quick_gelu: bool = True  # L: QuickGELU; bigG: exact GELU (the official config has no quick_gelu for it)
    vocab_size: int = 49408
    context_length: int = 77


@dataclass
class OfficialFuserConfig:
    """The GroundingDINO-style feature enhancer that fuses each branch's text with the face patches."""

    layers: int = 6
    heads: int = 8  # deformable attention; the text enhancer and the bi-attention use heads // 2
    ffn: int = 2048  # deformable FFN; the text FFN and the bi-attention width are ffn // 2
    points: int = 4  # sampling points per head (one level: the face ViT's 12×12 grid)


@dataclass
class OfficialFaceCLIPConfig:
    """ByteDance's published FaceCLIP-SDXL encoder (bytedance/FaceCLIP @ a984887): the sizes its checkpoint holds."""

    tower_l: OfficialTextTowerConfig = field(default_factory=OfficialTextTowerConfig)
    tower_g: OfficialTextTowerConfig = field(default_factory=lambda: OfficialTextTowerConfig(
        width=1280, heads=20, layers=32, quick_gelu=False))
    vit: FaceViTConfig = field(default_factory=lambda: FaceViTConfig(embed_dim=768, depth=24, num_heads=8))
    fuser: OfficialFuserConfig = field(default_factory=OfficialFuserConfig)
    prefix: str = "Photo of a id person."
    id_word: str = "id"
    face_crop: int = 448  # the aligned crop it was trained on (ArcFace's template × 4), resized to vit.img_size
    autocast: bool = True  # on CUDA: bf16 autocast for towers, ViTs and projections, the fuser in fp32 (as official)


@dataclass
class FaceCLIPEncoderConfig:
    # facegen: our encoder (SDXL's own text towers, gated fusion; trains from SDXL). official: ByteDance's published
    # architecture (MetaCLIP towers, GroundingDINO fuser), loaded from a converted checkpoint (`facegen convert`).
    architecture: str = "facegen"
    official: OfficialFaceCLIPConfig = field(default_factory=OfficialFaceCLIPConfig)
    vit: FaceViTConfig = field(default_factory=FaceViTConfig)
    # the face stack's recognizer vector: None = the preset's face stack's (512 for insightface's ArcFace, 128 for
    # dlib), settled when the preset is read; an export keeps the width it was trained with
    face_embedding_dim: int | None = None
    fusion_layers: int = 4
    prefix: str = "photo of a id person."
    id_word: str = "id"
    clip_embed_dim: int = 768  # the CLIP image embedding the alignment loss aims at (ViT-L-14: 768)
    seed: int = 0

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"methods.faceclip.encoder.architecture '{self.architecture}': use one of "
                              f"{', '.join(ARCHITECTURES)}")


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
class FaceCLIPConfig(MethodConfig):
    MAX_MEGAPIXEL_STEPS = 220.0  # 4 images of 1024² at 50 steps (and their decoding)
    # An SDXL-layout model: a hub id, a local diffusers directory, "tiny:sdxl" or "random:sdxl-base". dtype auto:
    # fp16 on CUDA with the VAE decoded in fp32.
    base_model: str = "tiny:sdxl"
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(
        guidance_scale=5.0, width=864, height=1152, scheduler="euler"))
    encoder: FaceCLIPEncoderConfig = field(default_factory=FaceCLIPEncoderConfig)
    train: FaceCLIPTrainConfig = field(default_factory=FaceCLIPTrainConfig)

    @property
    def face_size(self) -> int:
        return self.encoder.vit.img_size

    def check_model(self, model: str | None, face=None) -> None:
        """The official architecture has no fresh initialisation: a converted checkpoint must be named; it reads
        insightface's ArcFace only; an export of ours reads the embedding width it was trained with (said before
        anything loads, by the CLI and the service builder)."""
        weights = model or self.model
        if self.encoder.architecture == "official" and not weights:
            raise ConfigError("methods.faceclip.encoder.architecture is 'official': give the converted checkpoint "
                              "(--model DIR, or faceclip=DIR when serving; see `python -m facegen convert "
                              "faceclip-official --help`)")
        super().check_model(model, face)
        if face is None:
            return
        from facegen.core.face.registry import check_insightface_profile, face_metric
        from facegen.core.models.export import export_config

        exported = (export_config(weights) if weights else None) or {}
        if self.encoder.architecture == "official" or exported_architecture(exported) == "official":
            check_insightface_profile(face, "ByteDance's published FaceCLIP (encoder.architecture: official)")
        width, stack = exported.get("face_embedding_dim"), face_metric(face)
        if width is not None and width != stack.dim:
            raise ConfigError(f"the FaceCLIP encoder in {weights} reads {width}-d face embeddings, but face.model="
                              f"{face.model} gives {stack.dim}-d ones ({stack.name}): serve it with the face stack it "
                              "was trained with, or train one with this face.model")

    def settle_face_stack(self, face) -> None:
        if self.encoder.face_embedding_dim is None:
            from facegen.core.face.registry import face_metric

            self.encoder.face_embedding_dim = face_metric(face).dim


def exported_architecture(config: dict) -> str:
    """"facegen" or "official": the encoder class an export's config.json names (its _class_name)."""
    return "official" if config.get("_class_name") == "OfficialFaceCLIPEncoder" else "facegen"
