"""What both methods' pipelines share: scheduler choice, input checks, the face stack as a pipeline component, and
`FaceIdentityEncoder` — photos → a method's identity without the diffusion model (the pipeline's encode_identity
and the service's face-encoder deployment run the same code)."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facegen.errors import BadPrompt, ConfigError
from facegen.face.analyzer import DetectedFace, FaceAnalyzer
from facegen.face.images import ImageInput, load_image
from facegen.models.tokens import PLACEHOLDER


def make_scheduler(name: str, current):
    """Swap the scheduler class, keeping the model's noise schedule ("default" keeps the model's own)."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    table = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
    if name == "default":
        return current
    if name not in table:
        raise ConfigError(f"unknown scheduler '{name}' (known: default, {', '.join(table)})")
    return table[name].from_config(current.config)


# Above these, decoding the latents all at once is what runs out of GPU memory first: decode image by image (slicing)
# for batches, tile by tile (tiling) for large canvases.
VAE_SLICING_IMAGES = 2
VAE_TILING_PIXELS = 1536 * 1536


def fit_vae_to(vae, images: int, height: int, width: int) -> None:
    """Slice the VAE's decode for batches and tile it for large canvases; plain decoding otherwise (it is exact)."""
    (vae.enable_slicing if images >= VAE_SLICING_IMAGES else vae.disable_slicing)()
    (vae.enable_tiling if height * width > VAE_TILING_PIXELS else vae.disable_tiling)()


def in_dtype(module, dtype):
    """The whole module in `dtype` — FaceCLIP's encoder holds SDXL's text towers, loaded in the UNet's dtype — moved only
    when some weight differs (diffusers warns on every .to(dtype) of a ModelMixin)."""
    return module if all(p.dtype == dtype for p in module.parameters()) else module.to(dtype)


def as_prompts(prompt) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    if not prompts:
        raise BadPrompt("no prompt given")
    if not all(isinstance(p, str) for p in prompts):
        raise BadPrompt("prompt must be a text or a list of texts")
    return prompts


def check_common_inputs(prompts: list[str], negative_prompt, height: int | None, width: int | None,
                        needs_placeholder: bool) -> list[str]:
    """The checks every pipeline runs before drawing (and the CLI and HTTP layer run before queueing):
    sizes, the placeholder rule, negative prompts. Returns the negative prompts, one per prompt."""
    for name, size in (("width", width), ("height", height)):
        if size is not None and (not isinstance(size, int) or size <= 0 or size % 8):
            raise BadPrompt(f"{name} must be a positive multiple of 8, got {size}")
    if needs_placeholder:
        for text in prompts:
            if PLACEHOLDER not in text:
                raise BadPrompt(f'prompt "{text}" has no "{PLACEHOLDER}": write where the person goes, '
                                f'e.g. "{PLACEHOLDER} as a chef"')
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != len(prompts):
        raise BadPrompt(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
    if not all(isinstance(n, str) for n in negatives):
        raise BadPrompt("negative_prompt must be a text or a list of texts")
    return negatives


def photo_list(image) -> list:
    photos = list(image) if isinstance(image, (list, tuple)) else [image]
    if not photos:
        raise BadPrompt("no face photo given")
    return photos


def photo_name(photo, i: int) -> str:
    return str(photo) if isinstance(photo, (str, os.PathLike)) else f"photo {i + 1}"


class FaceIdentityEncoder:
    """Photos of one person → the method's identity. Subclasses turn detections into the identity."""

    def __init__(self, face_analyzer: FaceAnalyzer):
        self.face_analyzer = face_analyzer

    def detect(self, image: ImageInput | Sequence[ImageInput]) -> list[tuple[np.ndarray, DetectedFace]]:
        """(RGB, largest face) per photo; NoFaceFound names the photo without one."""
        return [self.face_analyzer.largest(load_image(p), photo_name(p, i)) for i, p in enumerate(photo_list(image))]

    def encode_identity(self, image: ImageInput | Sequence[ImageInput]):
        """One photo, or several of one person (averaged)."""
        return self.from_detections(self.detect(image))

    def from_detections(self, detections: list[tuple[np.ndarray, DetectedFace]]):
        raise NotImplementedError

    def to(self, device):
        raise NotImplementedError


class FaceAnalyzerComponent:
    """Pipeline mixin: the face stack is ONNX files referenced by a config, which diffusers cannot save itself;
    save_pretrained writes that config to face_analyzer/, from_pretrained reads it back."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, face_analyzer: FaceAnalyzer | None = None, **kwargs):
        if face_analyzer is None:
            saved = Path(pretrained_model_name_or_path) / "face_analyzer"
            face_analyzer = FaceAnalyzer.from_pretrained(saved) if saved.is_dir() else FaceAnalyzer()
        return super().from_pretrained(pretrained_model_name_or_path, face_analyzer=face_analyzer, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        pipeline_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
        level = pipeline_logger.level
        pipeline_logger.setLevel(logging.ERROR)  # it warns that it cannot save the ONNX-backed component
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            pipeline_logger.setLevel(level)
        if self.face_analyzer is not None:
            self.face_analyzer.save_pretrained(Path(save_directory) / "face_analyzer")

    def encode_identity(self, image):
        """One photo, or several of one person (averaged) → this method's identity."""
        if self.face_analyzer is None:
            raise ConfigError("this pipeline has no face_analyzer: pass identity= or build it with from_preset")
        return self.face_encoder.encode_identity(image)
