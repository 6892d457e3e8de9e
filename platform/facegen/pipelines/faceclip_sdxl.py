"""FaceCLIPSDXLPipeline: SDXL conditioned only by the FaceCLIP encoder (face + prompt → prompt_embeds, pooled).

SDXL's text encoders are gone: `faceclip_encoder` produces both conditionings; the negative conditioning is the same
encoder on an all-zero face with the negative prompt. Denoising is diffusers' own `StableDiffusionXLPipeline`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils import BaseOutput

from facegen.errors import BadPrompt
from facegen.face.analyzer import FaceAnalyzer
from facegen.face.images import ImageInput
from facegen.models.face_vit import faces_to_tensor
from facegen.models.faceclip import FaceCLIPEncoder
from facegen.pipelines.dreamidentity import FaceAnalyzerComponent, make_scheduler

LORA_DIR, LORA_FILE = "unet_lora", "pytorch_lora_weights.safetensors"


def load_trained_unet(model_dir: str | os.PathLike, unet):
    """A UNet trained with the encoder (train.unet=full → <model>/unet/, lora → <model>/unet_lora/), else `unet`."""
    from pathlib import Path

    from diffusers import UNet2DConditionModel

    d = Path(model_dir)
    if (d / "unet" / "config.json").is_file():
        return UNet2DConditionModel.from_pretrained(d / "unet", torch_dtype=unet.dtype)
    if (d / LORA_DIR / LORA_FILE).is_file():
        unet.load_lora_adapter(str(d / LORA_DIR), weight_name=LORA_FILE, prefix=None, adapter_name="faceclip")
    return unet


@dataclass
class FaceCLIPIdentity:
    embedding: torch.Tensor  # (identity_dim,) unit vector from the face analyzer's recognizer
    face_tokens: torch.Tensor  # (N, D) face ViT patch tokens of the aligned face


@dataclass
class FaceCLIPPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray


class FaceCLIPSDXLPipeline(FaceAnalyzerComponent, DiffusionPipeline):
    model_cpu_offload_seq = "faceclip_encoder->unet->vae"
    _optional_components = ["face_analyzer"]

    def __init__(self, unet, vae, scheduler, faceclip_encoder: FaceCLIPEncoder, face_analyzer: FaceAnalyzer | None = None,
                 num_inference_steps: int = 30, guidance_scale: float = 5.0, height: int = 1152, width: int = 864,
                 negative_prompt: str = ""):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler, faceclip_encoder=faceclip_encoder,
                              face_analyzer=face_analyzer)
        self.register_to_config(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                height=height, width=width, negative_prompt=negative_prompt)

    @classmethod
    def from_preset(cls, preset="tiny", overrides: Sequence[str] = (), model: str | os.PathLike | None = None,
                    torch_dtype: torch.dtype | None = None) -> FaceCLIPSDXLPipeline:
        """SDXL UNet/VAE/scheduler from the preset; the encoder from `model` (an exported one) or fresh from SDXL's
        own text encoders."""
        from facegen.config import Preset, load_preset
        from facegen.weights import load_sdxl_components

        p = preset if isinstance(preset, Preset) else load_preset(preset, overrides)
        c = load_sdxl_components(p.sdxl, p.sha256, torch_dtype=torch_dtype)
        weights = model or p.faceclip_encoder.weights
        if weights:
            encoder = FaceCLIPEncoder.from_pretrained(weights, torch_dtype=torch_dtype)
        else:
            encoder = FaceCLIPEncoder.from_sdxl(p.faceclip_encoder, c["text_encoder"], c["text_encoder_2"],
                                                c["tokenizer"], c["tokenizer_2"])
        g = p.faceclip
        unet = load_trained_unet(weights, c["unet"]) if weights else c["unet"]
        return cls(unet=unet, vae=c["vae"], scheduler=make_scheduler(g.scheduler, c["scheduler"]),
                   faceclip_encoder=encoder, face_analyzer=FaceAnalyzer(p.face), num_inference_steps=g.steps,
                   guidance_scale=g.guidance_scale, height=g.height, width=g.width, negative_prompt=g.negative_prompt)

    # -- identity ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_identity(self, image: ImageInput | Sequence[ImageInput]) -> FaceCLIPIdentity:
        """One photo or several of one person → the normalised mean identity and the mean face tokens."""
        photos = self._photos(image)
        faces, embeddings = [], []
        for i, photo in enumerate(photos):
            name = str(photo) if isinstance(photo, (str, os.PathLike)) else f"photo {i + 1}"
            rgb, face = self.face_analyzer.largest(photo, name)
            from facegen.face.align import align_face

            faces.append(align_face(rgb, face.kps, 112))
            embeddings.append(face.embedding)
        mean = torch.from_numpy(np.mean(embeddings, axis=0))
        tokens = self.faceclip_encoder.encode_faces(faces_to_tensor(np.stack(faces))).mean(dim=0)
        return FaceCLIPIdentity(embedding=mean / mean.norm().clamp(min=1e-12), face_tokens=tokens)

    @torch.no_grad()
    def zero_identity(self) -> FaceCLIPIdentity:
        """The all-zero face: the negative (and unconditional) identity."""
        enc = self.faceclip_encoder
        tokens = enc.encode_faces(torch.zeros(1, 3, enc.fc_config.vit.img_size, enc.fc_config.vit.img_size))[0]
        return FaceCLIPIdentity(embedding=torch.zeros(enc.fc_config.identity_dim), face_tokens=tokens)

    def encode_prompt_with_identity(self, prompt: str | list[str], identity: FaceCLIPIdentity):
        """→ (prompt_embeds B×77×(D1+D2), pooled_prompt_embeds B×P), as SDXL's encode_prompt returns them."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise BadPrompt("prompt must be a text or a list of texts")
        b = len(prompts)
        if isinstance(identity, (list, tuple)):  # one identity per prompt (batched service requests)
            if len(identity) != b:
                raise BadPrompt(f"{len(identity)} identities for {b} prompts")
            embedding = torch.stack([i.embedding for i in identity])
            tokens = torch.stack([i.face_tokens for i in identity])
        else:
            embedding, tokens = identity.embedding.expand(b, -1), identity.face_tokens.expand(b, -1, -1)
        return self.faceclip_encoder(prompts, embedding.to(self.faceclip_encoder.dtype), tokens)

    # -- generation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str], identity: FaceCLIPIdentity | None = None,
                 face_image: ImageInput | Sequence[ImageInput] | None = None, negative_prompt: str | list[str] | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, num_images_per_prompt: int = 1,
                 generator=None, latents: torch.Tensor | None = None, output_type: str = "pil",
                 **kwargs) -> FaceCLIPPipelineOutput:
        cfg = self.config
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if identity is None:
            if face_image is None:
                raise BadPrompt("give face_image= (a photo) or identity= (from encode_identity)")
            identity = self.encode_identity(face_image)
        height, width = height or cfg.height, width or cfg.width
        if height % 8 or width % 8 or height <= 0 or width <= 0:
            raise BadPrompt(f"width and height must be positive multiples of 8, got {width}×{height}")
        negative = cfg.negative_prompt if negative_prompt is None else negative_prompt
        negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        if len(negatives) != len(prompts):
            raise BadPrompt(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        embeds, pooled = self.encode_prompt_with_identity(prompts, identity)
        neg_embeds, neg_pooled = self.encode_prompt_with_identity(negatives, self.zero_identity())
        sdxl = StableDiffusionXLPipeline(vae=self.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                         tokenizer_2=None, unet=self.unet, scheduler=self.scheduler,
                                         add_watermarker=False)
        sdxl.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        dtype = self.unet.dtype
        out = sdxl(prompt_embeds=embeds.to(dtype), pooled_prompt_embeds=pooled.to(dtype),
                   negative_prompt_embeds=neg_embeds.to(dtype), negative_pooled_prompt_embeds=neg_pooled.to(dtype),
                   num_inference_steps=num_inference_steps or cfg.num_inference_steps,
                   guidance_scale=cfg.guidance_scale if guidance_scale is None else guidance_scale,
                   height=height, width=width, num_images_per_prompt=num_images_per_prompt, generator=generator,
                   latents=latents, output_type=output_type, **kwargs)
        return FaceCLIPPipelineOutput(images=out.images)
