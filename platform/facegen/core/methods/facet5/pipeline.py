"""FaceT5FluxPipeline: FLUX.1-dev conditioned only by the FaceT5 encoder (face + prompt → prompt_embeds, pooled).

FLUX's T5 is replaced by the FaceT5 encoder, whose fuser mixes the face into the T5 stream; CLIP-L gives the pooled
vector. The negative is the same encoder on an all-zero face with the negative prompt, used through true
classifier-free guidance (`sampling.guidance_scale` is diffusers' `true_cfg_scale`; FLUX's distilled guidance input
stays at `distilled_guidance`, 1.0, as the official script runs). Denoising is the FLUX family's: diffusers' own `FluxPipeline`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facegen.core.errors import BadPrompt
from facegen.core.face.analyzer import FaceAnalyzer
from facegen.core.methods.facet5.encoder import FaceT5FluxEncoder, load_face_reader
from facegen.core.methods.identity_pipeline import IdentityPipeline, OneTensorIdentity
from facegen.core.methods.pipeline_utils import ExportedDenoiser, FaceIdentityEncoder, assemble, in_dtype, make_scheduler

METHOD_NAME = "facet5"
# A converted (or fully fine-tuned) DiT and/or a fine-tuning run's adapters.
TRANSFORMER = ExportedDenoiser("FluxTransformer2DModel", full_dir="transformer", lora_dir="transformer_lora",
                               adapter_name=METHOD_NAME)


def parts_an_export_brings(model_dir: str | os.PathLike | None) -> tuple[str, ...]:
    """The base model's parts not to load with this export: its own encoder (FLUX's T5 would be 9.5 GB loaded for
    nothing, and FLUX's CLIP-L and tokenizers are in it), and the base transformer (24 GB) when it has a converted DiT."""
    if not model_dir:
        return ()
    return ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2") + (
        (TRANSFORMER.full_dir,) if TRANSFORMER.has_full(model_dir) else ())


@dataclass
class FaceT5Condition(OneTensorIdentity):
    """FaceT5's identity: the face ViT's patch tokens of the aligned face (144×D; batched: N×144×D), which the fuser
    reads with the prompt. Several photos of one person: the mean tokens."""

    field, array_key = "face_tokens", "face_tokens"
    face_tokens: torch.Tensor


class FaceT5FaceEncoder(FaceIdentityEncoder):
    """Photos → FaceT5Condition with only the face stack and the encoder's face ViT loaded (no T5, no CLIP)."""

    def condition(self, crops: np.ndarray, embeddings=None) -> FaceT5Condition:
        return FaceT5Condition.mean([FaceT5Condition(t.float().cpu()) for t in self.reader(crops)])


class FaceT5FluxPipeline(IdentityPipeline):
    default_method, encoder_label, face_encoder_class = METHOD_NAME, "the FaceT5 encoder", FaceT5FaceEncoder
    encoder_component = "facet5_encoder"
    model_cpu_offload_seq = "facet5_encoder->transformer->vae"

    def __init__(self, transformer, vae, scheduler, facet5_encoder, face_analyzer: FaceAnalyzer | None = None,
                 method: str = METHOD_NAME, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
                 negative_prompt: str | None = None, distilled_guidance: float = 1.0, controlnet=None):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler, facet5_encoder=facet5_encoder,
                              face_analyzer=face_analyzer, controlnet=controlnet)
        self.register_sampling(method, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                               height=height, width=width, negative_prompt=negative_prompt)
        self.register_to_config(distilled_guidance=distilled_guidance)

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_section(cls, method, section, face_config, model: str | os.PathLike | None = None,
                     torch_dtype: torch.dtype | None = None, device=None,
                     face_analyzer: FaceAnalyzer | None = None) -> FaceT5FluxPipeline:
        """FLUX's transformer/VAE/scheduler as `section` (methods.facet5) names them; the encoder from `model` (a
        converted or fine-tuned export, with its DiT when it has one) or fresh from FLUX's own CLIP-L and T5."""
        from facegen.core import devices

        place = devices.resolve(section.dtype, device, key=f"methods.{method.name}.dtype")
        weights = cls.encoder_weights(section, model, face_config)
        dtype = torch_dtype or place.dtype
        c = method.base_family.load(section.base_model, section.sha256, torch_dtype=dtype,
                                 skip=parts_an_export_brings(weights))
        if weights:
            encoder = FaceT5FluxEncoder.from_pretrained(weights)
            transformer = TRANSFORMER.load(weights, c["transformer"], dtype)
        else:
            encoder = FaceT5FluxEncoder.fresh(section.encoder, c["text_encoder"], c["tokenizer"], c["tokenizer_2"],
                                              c["text_encoder_2"])
            transformer = c["transformer"]
        pipe = assemble(cls, method, section, place.device, face_analyzer, face_config, transformer=transformer, vae=c["vae"],
                        scheduler=make_scheduler(section.sampling.scheduler, c["scheduler"]),
                        facet5_encoder=in_dtype(encoder, place.encoder_dtype))
        pipe.register_to_config(distilled_guidance=section.distilled_guidance)
        return pipe

    @classmethod
    def face_reader(cls, method, section, weights):
        """The encoder's face ViT alone (photos → FaceT5Condition): no T5, no CLIP-L."""
        return load_face_reader(weights, section.encoder)

    # -- inputs ------------------------------------------------------------------------------------------------
    def encode_prompt_with_identity(self, prompts: list[str], identity: FaceT5Condition | Sequence[FaceT5Condition]):
        """→ (prompt_embeds B×max_length×d_model, pooled_prompt_embeds B×768), as FLUX's encode_prompt returns them."""
        b = len(prompts)
        if isinstance(identity, (list, tuple)):  # one condition per prompt (batched service requests)
            if len(identity) != b:
                raise BadPrompt(f"{len(identity)} identities for {b} prompts")
            identity = FaceT5Condition.stack(identity)
        tokens = identity.face_tokens
        if tokens.dim() == 2:  # one face for every prompt
            tokens = tokens.expand(b, *tokens.shape)
        return self.facet5_encoder.encode(prompts, tokens)

    # -- generation (the shared __call__: identity_pipeline.IdentityPipeline) ---------------------------------
    def guidance_kwargs(self, guidance_scale: float) -> dict:
        """The preset's guidance is true CFG (against the zero-face negative); FLUX's distilled input stays fixed."""
        return {"true_cfg_scale": guidance_scale, "guidance_scale": self.config.distilled_guidance}

    def encode_conditioning(self, prompts: list[str], negatives: list[str], identity) -> dict:
        embeds, pooled = self.encode_prompt_with_identity(prompts, identity)
        neg_embeds, neg_pooled = self.facet5_encoder.encode(negatives, self.facet5_encoder.zero_face_tokens(len(negatives)))
        dtype = self.transformer.dtype
        return {"prompt_embeds": embeds.to(dtype), "pooled_prompt_embeds": pooled.to(dtype),
                "negative_prompt_embeds": neg_embeds.to(dtype), "negative_pooled_prompt_embeds": neg_pooled.to(dtype)}
