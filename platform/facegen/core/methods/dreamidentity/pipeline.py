"""DreamIdentityPipeline: a Stable Diffusion model (SD 2.1, or SDXL) whose prompt word "S*" is a face.

The M² encoder turns an aligned face into k embeddings (the id_tokens) in the text towers' token-embedding space —
on SDXL, CLIP-L's and OpenCLIP-bigG's widths side by side, one projection head per tower. A prompt such as "S* as a
chef" is tokenised with k placeholder slots where "S*" stood; a forward hook on each tower's token embedding writes
its share of the id_tokens into those slots, so position embeddings, attention, the final norm and (SDXL) bigG's
pooled projection run exactly as for real words. The base family (facegen.core.bases) turns the towers' outputs into
its conditioning and denoises with diffusers' own pipeline. One class for both bases: the registry entry says which.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from facegen.core.errors import ConfigError
from facegen.core.face.analyzer import FaceAnalyzer
from facegen.core.methods.dreamidentity.encoder import M2Encoder, with_token_dim
from facegen.core.methods.identity_pipeline import IdentityPipeline, OneTensorIdentity
from facegen.core.methods.pipeline_utils import FaceIdentityEncoder, assemble, in_dtype, make_scheduler
from facegen.core.models.tokens import tokenize_with_placeholders
from facegen.core.prompts import as_prompts

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
    """The trained encoder (`weights`: checked by IdentityPipeline.encoder_weights) or a fresh seeded one for this base
    model (`token_dim`: its text towers' widths, summed)."""
    if weights:
        encoder = M2Encoder.from_pretrained(weights)
        with_token_dim(encoder.m2_config, token_dim)  # an encoder trained for another base model is refused here
        return encoder
    return M2Encoder.from_config_random(with_token_dim(section.encoder, token_dim))


class DreamIdentityPipeline(IdentityPipeline):
    default_method, encoder_label, face_encoder_class = METHOD_NAME, "the trained M² encoder", M2FaceEncoder
    encoder_component = "m2_encoder"
    _optional_components = ["face_analyzer", "controlnet", "text_encoder_2", "tokenizer_2"]  # SDXL's second tower
    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, m2_encoder: M2Encoder,
                 face_analyzer: FaceAnalyzer | None = None, method: str = METHOD_NAME,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None, height: int | None = None,
                 width: int | None = None, negative_prompt: str | None = None, controlnet=None, text_encoder_2=None,
                 tokenizer_2=None):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              m2_encoder=m2_encoder, face_analyzer=face_analyzer, controlnet=controlnet,
                              text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
        self.register_sampling(method, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                               height=height, width=width, negative_prompt=negative_prompt)
        token_dim = sum(self.base.token_dims_of(self.text_parts))
        if m2_encoder.m2_config.token_dim != token_dim:
            raise ConfigError(f"the M² encoder writes {m2_encoder.m2_config.token_dim}-d tokens but the text "
                              f"towers' are {token_dim}-d: it was trained for another base model")

    @property
    def text_parts(self) -> dict:
        """The text towers and tokenizers, by the base's component names."""
        return {name: getattr(self, name) for pair in self.base.config.text_towers for name in pair}

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_section(cls, method, section, face_config, model: str | os.PathLike | None = None,
                     torch_dtype: torch.dtype | None = None, device=None,
                     face_analyzer: FaceAnalyzer | None = None) -> DreamIdentityPipeline:
        """Base model and M² encoder as `section` (methods.<method>) names them, placed on `device` in the section's
        dtype (`facegen.core.devices.resolve`); `model` = an exported M² directory."""
        from facegen.core import devices

        place = devices.resolve(section.dtype, device, key=f"methods.{method.name}.dtype")
        base = method.base_family
        components = base.load(section.base_model, section.sha256, torch_dtype=torch_dtype or place.dtype)
        m2 = load_m2_encoder(section, cls.encoder_weights(section, model, face_config), sum(base.token_dims_of(components)))
        components["scheduler"] = make_scheduler(section.sampling.scheduler, components["scheduler"])
        return assemble(cls, method, section, place.device, face_analyzer, face_config, **components,
                        m2_encoder=in_dtype(m2, place.encoder_dtype))

    @classmethod
    def face_reader(cls, method, section, weights) -> M2Encoder:
        """The whole M² encoder (it is all face side), for the base model's token widths: no diffusion model."""
        return load_m2_encoder(section, weights, sum(method.base_family.token_dims(section.base_model, section.sha256)))

    # -- inputs ------------------------------------------------------------------------------------------------
    def check_prompt_tokens(self, prompt: str | list[str]) -> None:
        """Every S* within the tokenizer's length (BadPrompt otherwise): the check only the tokenizer can make, run by
        the service per request before requests share a batch."""
        for text in as_prompts(prompt):
            tokenize_with_placeholders(self.tokenizer, text, self.m2_encoder.m2_config.num_tokens)

    def id_tokens(self, identity, n: int) -> torch.Tensor:
        """The identity as n×k×D id_tokens on the text towers' device and dtype."""
        if isinstance(identity, (list, tuple)):  # one identity per prompt (batched service requests)
            identity = IdTokens.stack(identity)
        tokens = identity.tokens if isinstance(identity, IdTokens) else identity
        k = self.m2_encoder.m2_config.num_tokens
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(0).expand(n, -1, -1)
        if tokens.shape[0] != n or tokens.shape[1] != k:
            raise ValueError(f"id_tokens of shape {tuple(tokens.shape)} do not fit {n} prompts × {k} tokens")
        return tokens.to(device=self.text_encoder.device, dtype=self.text_encoder.dtype)

    def encode_prompt_with_identity(self, prompt: str | list[str], identity: IdTokens | torch.Tensor,
                                    require_placeholder: bool = True) -> dict:
        """B prompts + id_tokens (k×D, or B×k×D) → the base's conditioning (SD 2.1: prompt_embeds B×77×D; SDXL:
        prompt_embeds B×77×(D1+D2) and pooled_prompt_embeds), S* filled in. Differentiable in the id_tokens, so
        training can backpropagate into the M² encoder."""
        prompts = as_prompts(prompt)
        return self.base.encode_prompt(self.text_parts, prompts, self.id_tokens(identity, len(prompts)),
                                       self.m2_encoder.m2_config.num_tokens, require_placeholder)

    # -- generation (the shared __call__: identity_pipeline.IdentityPipeline) ----------------------------------
    def encode_conditioning(self, prompts: list[str], negatives: list[str], identity) -> dict:
        """S* filled with the id_tokens in the prompts, and in the negative prompts where they say S*."""
        tokens, k = self.id_tokens(identity, len(prompts)), self.m2_encoder.m2_config.num_tokens
        return {**self.base.encode_prompt(self.text_parts, prompts, tokens, k, require_placeholder=True),
                **self.base.encode_negative(self.text_parts, negatives, tokens, k)}
