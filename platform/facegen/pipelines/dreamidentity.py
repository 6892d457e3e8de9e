"""DreamIdentityPipeline: Stable Diffusion 2.1 whose prompt word "S*" is a face.

The M² encoder turns an aligned face into k embeddings in the text encoder's token-embedding space. A prompt such as
"S* as a chef" is tokenised with k placeholder slots where "S*" stood; a forward hook on the text encoder's token
embedding writes the identity embeddings into those slots, so position embeddings, attention and the final norm run
exactly as for real words. Denoising is diffusers' own `StableDiffusionPipeline`, given the prompt embeddings.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, EulerDiscreteScheduler, StableDiffusionPipeline
from diffusers.utils import BaseOutput

from facegen.errors import BadPrompt, ConfigError
from facegen.face.analyzer import FaceAnalyzer
from facegen.face.images import ImageInput
from facegen.models.m2 import M2Encoder
from facegen.models.tokens import PLACEHOLDER, token_embedding_override, tokenize_with_placeholders


@dataclass
class DreamIdentityPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray


def make_scheduler(name: str, current):
    """Swap the scheduler class, keeping the model's noise schedule ("default" keeps the model's own)."""
    table = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
    if name == "default":
        return current
    if name not in table:
        raise ConfigError(f"unknown scheduler '{name}' (known: default, {', '.join(table)})")
    return table[name].from_config(current.config)


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
        # diffusers saves torch/transformers components; the face stack is ONNX files referenced by its config.
        pipeline_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
        level = pipeline_logger.level
        pipeline_logger.setLevel(logging.ERROR)
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            pipeline_logger.setLevel(level)
        if self.face_analyzer is not None:
            self.face_analyzer.save_pretrained(Path(save_directory) / "face_analyzer")

    def _photos(self, image) -> list:
        if self.face_analyzer is None:
            raise ConfigError("this pipeline has no face_analyzer: pass identity= or build it with from_preset")
        photos = list(image) if isinstance(image, (list, tuple)) else [image]
        if not photos:
            raise BadPrompt("face_image is an empty list")
        return photos


class DreamIdentityPipeline(FaceAnalyzerComponent, DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["face_analyzer"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, m2_encoder: M2Encoder,
                 face_analyzer: FaceAnalyzer | None = None, num_inference_steps: int = 30,
                 guidance_scale: float = 7.5, height: int = 512, width: int = 512, negative_prompt: str = ""):
        super().__init__()
        token_dim = text_encoder.get_input_embeddings().embedding_dim
        if m2_encoder.m2_config.token_dim != token_dim:
            raise ConfigError(
                f"m2.token_dim is {m2_encoder.m2_config.token_dim} but the text encoder's tokens are {token_dim}-d"
            )
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              m2_encoder=m2_encoder, face_analyzer=face_analyzer)
        self.register_to_config(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                height=height, width=width, negative_prompt=negative_prompt)

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset="tiny", overrides: Sequence[str] = (), model: str | os.PathLike | None = None,
                    torch_dtype: torch.dtype | None = None) -> DreamIdentityPipeline:
        """Base model, face stack and M² encoder as a preset names them; `model` = an exported M² directory."""
        from facegen.config import Preset, load_preset
        from facegen.weights import load_sd21_components

        p = preset if isinstance(preset, Preset) else load_preset(preset, overrides)
        components = load_sd21_components(p.sd21, p.sha256, torch_dtype=torch_dtype)
        weights = model or p.m2.weights
        m2 = M2Encoder.from_pretrained(weights) if weights else M2Encoder.from_config_random(p.m2)
        g = p.dreamidentity
        components["scheduler"] = make_scheduler(g.scheduler, components["scheduler"])
        return cls(**components, m2_encoder=m2.to(dtype=torch_dtype) if torch_dtype else m2,
                   face_analyzer=FaceAnalyzer(p.face), num_inference_steps=g.steps, guidance_scale=g.guidance_scale,
                   height=g.height, width=g.width, negative_prompt=g.negative_prompt)

    # -- identity ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_identity(self, image: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """One photo, or several of one person (their embeddings are averaged) → k×token_dim."""
        photos = self._photos(image)
        names = [str(p) if isinstance(p, (str, os.PathLike)) else f"photo {i + 1}" for i, p in enumerate(photos)]
        faces = np.stack([self.face_analyzer.aligned(p, 112, name=n) for p, n in zip(photos, names)])
        return self.m2_encoder.encode_aligned(faces).mean(dim=0)

    def encode_prompt_with_identity(self, prompt: str | list[str], identity: torch.Tensor,
                                    require_placeholder: bool = True) -> torch.Tensor:
        """B prompts + identity (k×D, or B×k×D) → the text encoder's B×77×D hidden states, S* filled in.
        Differentiable in `identity`, so training can backpropagate into the M² encoder."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        k = self.m2_encoder.m2_config.num_tokens
        if identity.dim() == 2:
            identity = identity.unsqueeze(0).expand(len(prompts), -1, -1)
        if identity.shape[0] != len(prompts) or identity.shape[1] != k:
            raise ValueError(f"identity of shape {tuple(identity.shape)} does not fit {len(prompts)} prompts × {k} tokens")
        rows, slot_rows, values = [], [], []
        for b, text in enumerate(prompts):
            if not isinstance(text, str):
                raise BadPrompt(f"prompt must be text, got {type(text).__name__}")
            if require_placeholder and PLACEHOLDER not in text:
                raise BadPrompt(f'prompt "{text}" has no "{PLACEHOLDER}": write where the person goes, e.g. "{PLACEHOLDER} as a chef"')
            ids, slots = tokenize_with_placeholders(self.tokenizer, text, k)
            rows.append(ids)
            slot_rows.append(slots)
            values += [identity[b, j % k] for j in range(len(slots))]
        input_ids = torch.tensor(rows, device=self.text_encoder.device)
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for b, slots in enumerate(slot_rows):
            mask[b, slots] = True
        if not values:
            return self.text_encoder(input_ids)[0]
        with token_embedding_override(self.text_encoder, mask, torch.stack(values)):
            return self.text_encoder(input_ids)[0]

    # -- generation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str], identity: torch.Tensor | None = None,
                 face_image: ImageInput | Sequence[ImageInput] | None = None, negative_prompt: str | list[str] | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
                 output_type: str = "pil", **kwargs) -> DreamIdentityPipelineOutput:
        cfg = self.config
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise BadPrompt("no prompt given")
        if identity is None:
            if face_image is None:
                raise BadPrompt("give face_image= (a photo) or identity= (from encode_identity)")
            identity = self.encode_identity(face_image)
        identity = identity.to(device=self._execution_device, dtype=self.text_encoder.dtype)
        prompt_embeds = self.encode_prompt_with_identity(prompts, identity)
        negative = cfg.negative_prompt if negative_prompt is None else negative_prompt
        negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        if len(negatives) != len(prompts):
            raise BadPrompt(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        negative_embeds = self.encode_prompt_with_identity(negatives, identity, require_placeholder=False)
        height, width = height or cfg.height, width or cfg.width
        if height % 8 or width % 8 or height <= 0 or width <= 0:
            raise BadPrompt(f"width and height must be positive multiples of 8, got {width}×{height}")
        sd = StableDiffusionPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                     unet=self.unet, scheduler=self.scheduler, safety_checker=None,
                                     feature_extractor=None, requires_safety_checker=False)
        sd.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        out = sd(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds,
                 num_inference_steps=num_inference_steps or cfg.num_inference_steps,
                 guidance_scale=cfg.guidance_scale if guidance_scale is None else guidance_scale,
                 height=height, width=width, num_images_per_prompt=num_images_per_prompt, generator=generator,
                 latents=latents, output_type=output_type, **kwargs)
        return DreamIdentityPipelineOutput(images=out.images)
