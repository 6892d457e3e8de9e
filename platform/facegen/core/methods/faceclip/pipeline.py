"""FaceCLIPSDXLPipeline: SDXL conditioned only by the FaceCLIP encoder (face + prompt → prompt_embeds, pooled).

SDXL's text encoders are gone: `faceclip_encoder` produces both conditionings; the negative conditioning is the same
encoder on an all-zero face with the negative prompt. Denoising is the SDXL family's: diffusers' own `StableDiffusionXLPipeline`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facegen.core.errors import BadPrompt
from facegen.core.face.analyzer import FaceAnalyzer
from facegen.core.methods.faceclip.encoder import FaceCLIPEncoder, load_encoder, load_face_reader
from facegen.core.methods.identity_pipeline import Identity, IdentityPipeline
from facegen.core.methods.pipeline_utils import (
    ExportedDenoiser,
    FaceIdentityEncoder,
    assemble,
    in_dtype,
    make_scheduler,
)
from facegen.core.prompts import as_prompts

METHOD_NAME = "faceclip"
# A full UNet (a train.unet=full run, the converted official model and what was fine-tuned from it) and/or adapters.
UNET = ExportedDenoiser("UNet2DConditionModel", full_dir="unet", lora_dir="unet_lora", adapter_name=METHOD_NAME)


@dataclass
class FaceCLIPCondition(Identity):
    """FaceCLIP's identity — the face condition it fuses with the prompt: face_embedding, the identity vector put at
    the prompt's "id" slot, and face_tokens, the face ViT's patch tokens of the aligned face. Our architecture: the
    recognizer's unit vector (512) and one ViT's tokens (N×D); the official one: a row per branch, each branch's
    own ViT (2×512, 2×N×D). Batched: one more leading dimension."""

    face_embedding: torch.Tensor
    face_tokens: torch.Tensor

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"face_embedding": self.face_embedding.detach().float().cpu().numpy(),
                "face_tokens": self.face_tokens.detach().float().cpu().numpy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FaceCLIPCondition:
        return cls(torch.from_numpy(np.asarray(arrays["face_embedding"], np.float32)),
                   torch.from_numpy(np.asarray(arrays["face_tokens"], np.float32)))

    @classmethod
    def mean(cls, items: Sequence[FaceCLIPCondition]) -> FaceCLIPCondition:
        """Several photos of one person: the normalised mean embedding and the mean face tokens."""
        mean = torch.stack([i.face_embedding for i in items]).mean(dim=0)
        return cls(mean / mean.norm(dim=-1, keepdim=True).clamp(min=1e-12),
                   torch.stack([i.face_tokens for i in items]).mean(dim=0))

    @classmethod
    def stack(cls, items: Sequence[FaceCLIPCondition]) -> FaceCLIPCondition:
        return cls(torch.stack([i.face_embedding for i in items]), torch.stack([i.face_tokens for i in items]))


class FaceCLIPFaceEncoder(FaceIdentityEncoder):
    """Photos → FaceCLIPCondition with only the face stack and the encoder's face reader loaded (its face ViTs; no
    text towers)."""

    uses_embeddings = True  # the recognizer's embedding is the condition's face_embedding

    def condition(self, crops: np.ndarray, embeddings: np.ndarray) -> FaceCLIPCondition:
        face_embedding, face_tokens = self.reader(torch.from_numpy(crops), torch.from_numpy(embeddings))
        return FaceCLIPCondition.mean([FaceCLIPCondition(e.float().cpu(), t.float().cpu())
                                       for e, t in zip(face_embedding, face_tokens)])


class FaceCLIPSDXLPipeline(IdentityPipeline):
    default_method, encoder_label, face_encoder_class = METHOD_NAME, "the trained FaceCLIP encoder", FaceCLIPFaceEncoder
    encoder_component = "faceclip_encoder"
    model_cpu_offload_seq = "faceclip_encoder->unet->vae"

    def __init__(self, unet, vae, scheduler, faceclip_encoder, face_analyzer: FaceAnalyzer | None = None,
                 method: str = METHOD_NAME, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
                 negative_prompt: str | None = None, controlnet=None):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler, faceclip_encoder=faceclip_encoder,
                              face_analyzer=face_analyzer, controlnet=controlnet)
        self.register_sampling(method, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                               height=height, width=width, negative_prompt=negative_prompt)

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_section(cls, method, section, face_config, model: str | os.PathLike | None = None,
                     torch_dtype: torch.dtype | None = None, device=None,
                     face_analyzer: FaceAnalyzer | None = None) -> FaceCLIPSDXLPipeline:
        """SDXL UNet/VAE/scheduler as `section` (methods.faceclip) names them; the encoder from `model` (an exported
        one, with its trained UNet when there is one) or fresh from SDXL's own text encoders."""
        from facegen.core import devices

        place = devices.resolve(section.dtype, device, key=f"methods.{method.name}.dtype")
        weights = cls.encoder_weights(section, model, face_config)
        dtype = torch_dtype or place.dtype
        # Only what this pipeline will hold: a trained encoder brings its own text towers (SDXL's would be 3 GB
        # loaded for nothing), and a fully trained UNet replaces the base one (10 GB in fp32).
        skip = ()
        if weights:
            skip = ("text_encoder", "text_encoder_2") + (("unet",) if UNET.has_full(weights) else ())
        c = method.base_family.load(section.base_model, section.sha256, torch_dtype=dtype, skip=skip)
        if weights:
            encoder = load_encoder(weights)
        else:
            encoder = FaceCLIPEncoder.from_sdxl(section.encoder, c["text_encoder"], c["text_encoder_2"],
                                                c["tokenizer"], c["tokenizer_2"])
        unet = UNET.load(weights, c["unet"], dtype) if weights else c["unet"]
        return assemble(cls, method, section, place.device, face_analyzer, face_config, unet=unet, vae=c["vae"],
                        scheduler=make_scheduler(section.sampling.scheduler, c["scheduler"]),
                        faceclip_encoder=in_dtype(encoder, place.encoder_dtype))

    @classmethod
    def face_reader(cls, method, section, weights):
        """The encoder's face ViT(s) alone (photos → FaceCLIPCondition): no SDXL text towers."""
        return load_face_reader(weights, section.encoder)

    # -- inputs ------------------------------------------------------------------------------------------------
    def encode_negative(self, negative_prompt: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The negative (and unconditional) conditioning: the encoder on the all-zero face with the negative
        prompts (the official architecture also drops its "Photo of a id person." prefix there)."""
        return self.faceclip_encoder.encode_negative(as_prompts(negative_prompt))

    def encode_prompt_with_identity(self, prompt: str | list[str],
                                    identity: FaceCLIPCondition | Sequence[FaceCLIPCondition]):
        """→ (prompt_embeds B×77×(D1+D2), pooled_prompt_embeds B×P), as SDXL's encode_prompt returns them."""
        prompts = as_prompts(prompt)
        b = len(prompts)
        if isinstance(identity, (list, tuple)):  # one condition per prompt (batched service requests)
            if len(identity) != b:
                raise BadPrompt(f"{len(identity)} identities for {b} prompts")
            identity = FaceCLIPCondition.stack(identity)
        embedding, tokens = identity.face_embedding, identity.face_tokens
        if embedding.dim() == self.faceclip_encoder.condition_dims[0]:  # one face for every prompt
            embedding, tokens = embedding.expand(b, *embedding.shape), tokens.expand(b, *tokens.shape)
        return self.faceclip_encoder(prompts, embedding, tokens)

    # -- generation (the shared __call__: identity_pipeline.IdentityPipeline) ---------------------------------
    def encode_conditioning(self, prompts: list[str], negatives: list[str], identity) -> dict:
        """SDXL's conditioning from the joint encoder; the negative is the zero face with the negative prompt."""
        embeds, pooled = self.encode_prompt_with_identity(prompts, identity)
        neg_embeds, neg_pooled = self.encode_negative(negatives)
        dtype = self.unet.dtype
        return {"prompt_embeds": embeds.to(dtype), "pooled_prompt_embeds": pooled.to(dtype),
                "negative_prompt_embeds": neg_embeds.to(dtype), "negative_pooled_prompt_embeds": neg_pooled.to(dtype)}
