"""DreamIdentityPipeline: Stable Diffusion 2.1 whose prompt word "S*" is a face.

The M² encoder turns an aligned face into k embeddings (the id_tokens) in the text encoder's token-embedding space.
A prompt such as "S* as a chef" is tokenised with k placeholder slots where "S*" stood; a forward hook on the text
encoder's token embedding writes the id_tokens into those slots, so position embeddings, attention and the final
norm run exactly as for real words. Denoising is diffusers' own `StableDiffusionPipeline`, given the prompt embeddings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

from facegen.core.errors import BadPrompt, ConfigError
from facegen.core.face.analyzer import FaceAnalyzer
from facegen.core.methods.dreamidentity.encoder import M2Encoder, with_token_dim
from facegen.core.methods.identity_pipeline import IdentityPipeline
from facegen.core.methods.pipeline_utils import (
    FaceIdentityEncoder,
    OneTensorIdentity,
    assemble,
    in_dtype,
    make_scheduler,
)
from facegen.core.models.tokens import token_embedding_override, tokenize_with_placeholders
from facegen.core.prompts import PLACEHOLDER, as_prompts

METHOD_NAME = "dreamidentity"


@dataclass
class IdTokens(OneTensorIdentity):
    """DreamIdentity's identity: the k "S*" embeddings of one face (k×D), or one per image of a batch (B×k×D)."""

    field, array_key = "tokens", "id_tokens"
    tokens: torch.Tensor


class M2FaceEncoder(FaceIdentityEncoder):
    """Photos → IdTokens with only the face stack and the M² encoder loaded (no diffusion model)."""

    @property
    def crop_size(self) -> int:
        return self.reader.face_size

    def condition(self, crops: np.ndarray, embeddings=None) -> IdTokens:
        return IdTokens(self.reader.encode_aligned(crops).mean(dim=0))


def load_m2_encoder(section, weights, token_dim: int) -> M2Encoder:
    """The trained encoder (`weights`: checked by MethodPipeline.encoder_weights) or a fresh seeded one for this base
    model."""
    if weights:
        encoder = M2Encoder.from_pretrained(weights)
        with_token_dim(encoder.m2_config, token_dim)  # an encoder trained for another base model is refused here
        return encoder
    return M2Encoder.from_config_random(with_token_dim(section.encoder, token_dim))


class DreamIdentityPipeline(IdentityPipeline):
    method_name, encoder_label, face_encoder_class = METHOD_NAME, "the trained M² encoder", M2FaceEncoder
    encoder_component = "m2_encoder"
    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, m2_encoder: M2Encoder,
                 face_analyzer: FaceAnalyzer | None = None, num_inference_steps: int = 30,
                 guidance_scale: float = 7.5, height: int = 512, width: int = 512, negative_prompt: str = "",
                 controlnet=None):
        super().__init__()
        token_dim = text_encoder.get_input_embeddings().embedding_dim
        if m2_encoder.m2_config.token_dim != token_dim:
            raise ConfigError(f"the M² encoder writes {m2_encoder.m2_config.token_dim}-d tokens but the text "
                              f"encoder's are {token_dim}-d: it was trained for another base model")
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              m2_encoder=m2_encoder, face_analyzer=face_analyzer, controlnet=controlnet)
        self.register_to_config(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                height=height, width=width, negative_prompt=negative_prompt)

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_section(cls, section, face_config, model: str | os.PathLike | None = None,
                     torch_dtype: torch.dtype | None = None, device=None,
                     face_analyzer: FaceAnalyzer | None = None) -> DreamIdentityPipeline:
        """Base model and M² encoder as `section` (methods.dreamidentity) names them, placed on `device` in the
        section's dtype (`facegen.core.devices.resolve`); `model` = an exported M² directory."""
        from facegen.core import devices
        from facegen.core.weights import load_sd21_components

        place = devices.resolve(section.dtype, device, key=f"methods.{METHOD_NAME}.dtype")
        components = load_sd21_components(section.base_model, section.sha256, torch_dtype=torch_dtype or place.dtype)
        m2 = load_m2_encoder(section, cls.encoder_weights(section, model),
                             components["text_encoder"].get_input_embeddings().embedding_dim)
        components["scheduler"] = make_scheduler(section.sampling.scheduler, components["scheduler"])
        return assemble(cls, section, place.device, face_analyzer, face_config, **components,
                        m2_encoder=in_dtype(m2, place.encoder_dtype))

    @classmethod
    def face_reader(cls, section, weights) -> M2Encoder:
        """The whole M² encoder (it is all face side), for the base model's token width: no diffusion model."""
        from facegen.core.weights import text_token_dim

        return load_m2_encoder(section, weights, text_token_dim(section.base_model, section.sha256))

    # -- inputs ------------------------------------------------------------------------------------------------
    def check_prompt_tokens(self, prompt: str | list[str]) -> None:
        """Every S* within the tokenizer's length (BadPrompt otherwise): the check only the tokenizer can make, run by
        the service per request before requests share a batch."""
        for text in as_prompts(prompt):
            tokenize_with_placeholders(self.tokenizer, text, self.m2_encoder.m2_config.num_tokens)

    def encode_prompt_with_identity(self, prompt: str | list[str], identity: IdTokens | torch.Tensor,
                                    require_placeholder: bool = True) -> torch.Tensor:
        """B prompts + id_tokens (k×D, or B×k×D) → the text encoder's B×77×D hidden states, S* filled in.
        Differentiable in the id_tokens, so training can backpropagate into the M² encoder."""
        prompts = as_prompts(prompt)
        tokens = identity.tokens if isinstance(identity, IdTokens) else identity
        k = self.m2_encoder.m2_config.num_tokens
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(0).expand(len(prompts), -1, -1)
        if tokens.shape[0] != len(prompts) or tokens.shape[1] != k:
            raise ValueError(f"id_tokens of shape {tuple(tokens.shape)} do not fit {len(prompts)} prompts × {k} tokens")
        rows, slot_rows, values = [], [], []
        for b, text in enumerate(prompts):
            if require_placeholder and PLACEHOLDER not in text:
                raise BadPrompt(f'prompt "{text}" has no "{PLACEHOLDER}": write where the person goes, e.g. "{PLACEHOLDER} as a chef"')
            ids, slots = tokenize_with_placeholders(self.tokenizer, text, k)
            rows.append(ids)
            slot_rows.append(slots)
            values += [tokens[b, j % k] for j in range(len(slots))]
        input_ids = torch.tensor(rows, device=self.text_encoder.device)
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for b, slots in enumerate(slot_rows):
            mask[b, slots] = True
        if not values:
            return self.text_encoder(input_ids)[0]
        with token_embedding_override(self.text_encoder, mask, torch.stack(values)):
            return self.text_encoder(input_ids)[0]

    # -- generation (the shared __call__: pipeline_utils.IdentityDiffusionCall) ---------------------------------
    def encode_conditioning(self, prompts: list[str], negatives: list[str], identity) -> dict:
        """S* filled with the id_tokens in the prompts, and in the negative prompts where they say S*."""
        if isinstance(identity, (list, tuple)):  # one identity per prompt (batched service requests)
            identity = IdTokens.stack(identity)
        tokens = identity.tokens.to(device=self._execution_device, dtype=self.text_encoder.dtype)
        return {"prompt_embeds": self.encode_prompt_with_identity(prompts, tokens),
                "negative_prompt_embeds": self.encode_prompt_with_identity(negatives, tokens, require_placeholder=False)}

    def denoiser(self, control: bool):
        """diffusers' Stable Diffusion pipeline over this pipeline's modules (its ControlNet pipeline under control)."""
        parts = dict(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                     scheduler=self.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if control:
            return StableDiffusionControlNetPipeline(**parts, controlnet=self.controlnet)
        return StableDiffusionPipeline(**parts)
