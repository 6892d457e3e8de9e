"""Helpers the methods' pipelines share (the contract itself is identity_pipeline.py): scheduler choice, VAE
slicing, face detection and resizing, `FaceIdentityEncoder` — photos → a method's identity without the diffusion
model (the pipeline's encode_identity and the service's face-encoder deployment run the same code) — how an export
carries its denoising model, and `assemble`, the end every `from_section` shares."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegen.core.errors import BadPrompt, ConfigError
from facegen.core.face.analyzer import DetectedFace, FaceAnalyzer
from facegen.core.face.images import ImageInput, load_image


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


def photo_list(image) -> list:
    photos = list(image) if isinstance(image, (list, tuple)) else [image]
    if not photos:
        raise BadPrompt("no face photo given")
    return photos


def photo_name(photo, i: int) -> str:
    return str(photo) if isinstance(photo, (str, os.PathLike)) else f"photo {i + 1}"


def detect_faces(face_analyzer: FaceAnalyzer, image: ImageInput | Sequence[ImageInput]) -> list[tuple[np.ndarray, DetectedFace]]:
    """(RGB, largest face) per photo (one, or a list of one person's); NoFaceFound names the photo without one."""
    return [face_analyzer.largest(load_image(p), photo_name(p, i)) for i, p in enumerate(photo_list(image))]


def resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    """Aligned face crops (N×S×S×3 uint8) at size×size (the template scales with the crop)."""
    import cv2

    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[None]
    if faces.shape[1] == size and faces.shape[2] == size:
        return faces
    shrink = faces.shape[1] > size
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
                     for f in faces])


@dataclass(frozen=True)
class ExportedDenoiser:
    """How an export carries the denoising model it draws with (FaceCLIP's UNet, FaceT5's DiT): a full model in the
    diffusers layout (<export>/<full_dir>/ — the converted official one, or one fine-tuned in full) that replaces the
    base model's, and LoRA adapters (<export>/<lora_dir>/<lora_file>, a fine-tuning run's) on top."""

    model_class: str  # the diffusers class of the full model
    full_dir: str
    lora_dir: str
    adapter_name: str
    lora_file: str = "pytorch_lora_weights.safetensors"

    def has_full(self, model_dir: str | os.PathLike) -> bool:
        return (Path(model_dir) / self.full_dir / "config.json").is_file()

    def load(self, model_dir: str | os.PathLike, base, dtype):
        """The model the export draws with: its own full model, else `base` (the base model's; None when it was not
        loaded), with the export's adapters on top when it has any."""
        import diffusers

        d = Path(model_dir)
        model = getattr(diffusers, self.model_class).from_pretrained(d / self.full_dir, torch_dtype=dtype) \
            if self.has_full(d) else base
        if (d / self.lora_dir / self.lora_file).is_file():
            model.load_lora_adapter(str(d / self.lora_dir), weight_name=self.lora_file, prefix=None,
                                    adapter_name=self.adapter_name)
        return model

    def save(self, directory: str | os.PathLike, start: str | os.PathLike | None, model=None, full: bool = False):
        """Write a trained export's denoiser: `model` in full (`full`, when a model was trained: an alignment-stage run
        trains none), else the full model of the export training started from (when it has one: the converted official
        model) and `model`'s LoRA adapters (a peft model)."""
        import shutil

        from facegen.core.models.checkpoints import write_safetensors
        from facegen.core.models.export import SOURCES_NAME, from_published

        d = Path(directory)
        if full and model is not None:
            model.save_pretrained(d / self.full_dir)
            return
        if start and self.has_full(start):
            shutil.copytree(Path(start) / self.full_dir, d / self.full_dir, dirs_exist_ok=True)
        if start and from_published(start):  # a fine-tune of published weights keeps their record (and licence)
            shutil.copy2(Path(start) / SOURCES_NAME, d / SOURCES_NAME)
        if model is not None:
            from peft.utils import get_peft_model_state_dict

            (d / self.lora_dir).mkdir(parents=True, exist_ok=True)
            write_safetensors(d / self.lora_dir / self.lora_file,
                              {k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()}, {"format": "pt"})


class FaceIdentityEncoder:
    """Photos of one person → the method's identity, with the face stack and the method's face reader alone (no
    diffusion model, no text towers): faces are aligned on the ArcFace template at `crop_size` (the reader's), and
    `condition` — each method's — turns the crops into one person's identity (several photos: the mean)."""

    uses_embeddings = False  # does `condition` read the recognizer's embeddings (computed for pre-aligned faces)?

    def __init__(self, face_analyzer: FaceAnalyzer, reader):
        self.face_analyzer, self.reader = face_analyzer, reader

    @property
    def crop_size(self) -> int:
        return self.reader.crop_size

    def encode_identity(self, image: ImageInput | Sequence[ImageInput]):
        """One photo, or several of one person (averaged)."""
        return self.from_detections(detect_faces(self.face_analyzer, image))

    def from_detections(self, detections: list[tuple[np.ndarray, DetectedFace]]):
        from facegen.core.face.align import align_face

        return self.from_crops(np.stack([align_face(rgb, face.kps, self.crop_size) for rgb, face in detections]),
                               np.stack([face.embedding for _, face in detections]))

    def from_crops(self, crops: np.ndarray, embeddings: np.ndarray):
        """Faces already aligned at `crop_size` (N×S×S×3 uint8) with their recognizer embeddings (N×D, the face
        stack's), of one person: what a service keeps of each photo right after detection."""
        import torch

        with torch.no_grad():
            return self.condition(crops, embeddings)

    def from_aligned(self, faces: np.ndarray):
        """Faces already aligned on the ArcFace template (N×S×S×3 uint8, any S), of one person (averaged): no
        detection — for pre-aligned datasets and the miniature world's drawings."""
        import torch

        embeddings = self.face_analyzer.embed_aligned(list(faces)) if self.uses_embeddings else None
        with torch.no_grad():
            return self.condition(resize_faces(faces, self.crop_size), embeddings)

    def condition(self, crops: np.ndarray, embeddings: np.ndarray | None):
        """Aligned crops N×crop_size×crop_size×3 (uint8) and, where the method reads them, the recognizer's
        embeddings N×D (the face stack's width) → the identity of the one person they show."""
        raise NotImplementedError

    def to(self, device):
        self.reader.to(device)
        return self


def assemble(cls, method, section, device, face_analyzer: FaceAnalyzer | None, face_config, **components):
    """A method's pipeline from its loaded components and its preset section: the registry entry it draws for
    (`method`, saved in its config by name), the sampling defaults registered in its config, the face stack
    (`face_analyzer`, else one built from `face_config`), the ControlNet setting, placed on `device` — the end every
    `from_section` shares."""
    s = section.sampling
    pipe = cls(**components, face_analyzer=face_analyzer or FaceAnalyzer(face_config), method=method.name,
               num_inference_steps=s.steps, guidance_scale=s.guidance_scale, height=s.height, width=s.width,
               negative_prompt=s.negative_prompt)
    pipe.control_config = section.controlnet
    return place_pipeline(pipe, device, section.memory)


def place_pipeline(pipe, device, memory: str):
    """The pipeline on `device`, or offloaded to the CPU between uses as `memory` (methods.<name>.memory) says:
    offloading is for a CUDA device only (on the CPU there is nothing to save)."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if memory == "none" or device.type != "cuda":
        return pipe.to(device)
    if memory == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    return pipe
