"""DreamIdentity's M² encoder: multi-scale face features → k pseudo-word embeddings "S*".

V = [v_3, v_6, v_9, v_12, v_final]: the face ViT's hidden states after the quarter blocks, each mean-pooled, and its
final identity vector, concatenated. k separate MLPs map V to k vectors in the text encoder's token-embedding space;
a prompt's "S*" is replaced by them. `regularization_loss` is the paper's λ·Σ‖s_i‖ term that keeps the embeddings
near the scale of real words so the prompt's other words still steer the image (editability).
"""
from __future__ import annotations

import dataclasses
import os

import torch
from diffusers import ModelMixin
from torch import nn

from facegen.core.methods.dreamidentity.config import M2EncoderConfig
from facegen.core.models.export import read_export, save_export
from facegen.core.models.face_vit import FaceViT, faces_to_tensor, load_arcface_checkpoint


class M2Encoder(ModelMixin):
    # A diffusers ModelMixin so DiffusionPipeline.save_pretrained / from_pretrained treat it as a component; the
    # on-disk format is facegen's own (config.json + model.safetensors), written and read by the overrides below.

    Config = M2EncoderConfig

    def __init__(self, config: M2EncoderConfig):
        super().__init__()
        if config.token_dim is None:
            raise ValueError("M2EncoderConfig.token_dim is unset: fill it from the base model (with_token_dim)")
        self.m2_config = config
        self.vit = FaceViT(config.vit)
        self.taps = list(config.taps or self.vit.default_taps())
        bad = [t for t in self.taps if not 1 <= t <= config.vit.depth]
        if bad:
            raise ValueError(f"encoder.taps {bad} outside the face ViT's {config.vit.depth} blocks")
        in_dim = config.vit.embed_dim * len(self.taps) + config.vit.num_features
        self.norm = nn.LayerNorm(in_dim)
        self.projectors = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, config.hidden_dim), nn.GELU(), nn.Linear(config.hidden_dim, config.token_dim))
            for _ in range(config.num_tokens)
        )
        self.vit.requires_grad_(False)  # frozen unless training says otherwise (methods.dreamidentity.train)

    @classmethod
    def from_config_random(cls, config: M2EncoderConfig) -> M2Encoder:
        """Fresh encoder: seeded projectors, and the face ViT from its arcface_torch checkpoint when one is named."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = cls(config)
        if config.vit.weights:
            load_arcface_checkpoint(model.vit, config.vit.weights)
        return model.eval()

    # -- forward -------------------------------------------------------------------------------------------------
    def features(self, faces: torch.Tensor) -> torch.Tensor:
        """V = [taps..., identity] for B×3×112×112 faces in [-1, 1]."""
        out = self.vit(faces, self.taps)
        return torch.cat([*out.taps, out.identity], dim=-1)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """B×3×112×112 aligned faces in [-1, 1] → B×k×token_dim embeddings."""
        faces = faces.to(device=self.norm.weight.device, dtype=self.norm.weight.dtype)
        v = self.norm(self.features(faces))
        return torch.stack([proj(v) for proj in self.projectors], dim=1)

    @torch.no_grad()
    def encode_aligned(self, faces) -> torch.Tensor:
        """Aligned RGB uint8 faces (one array, a stack or a list; vit.img_size square) → B×k×token_dim."""
        return self(faces_to_tensor(faces))

    def face_reader(self) -> M2Encoder:
        """The face side alone, as every method's encoder gives it: M² is all face side."""
        return self

    @property
    def face_size(self) -> int:
        return self.m2_config.vit.img_size

    @staticmethod
    def regularization_loss(embeddings: torch.Tensor) -> torch.Tensor:
        """Σ_i ‖s_i‖₂, averaged over the batch (× methods.dreamidentity.train.reg_weight: the paper's λ term)."""
        return embeddings.norm(dim=-1).sum(dim=-1).mean()

    # -- persistence ---------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **_ignored) -> None:
        """config.json + model.safetensors, written under temporary names and renamed (never half-written)."""
        save_export(save_directory, self, self.m2_config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, torch_dtype: torch.dtype | None = None, **_ignored):
        _, config, state = read_export(directory, M2EncoderConfig, "M² encoder", "model")
        model = cls(config)
        model.load_state_dict(state)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        return model.eval()


def with_token_dim(config: M2EncoderConfig, token_dim: int) -> M2EncoderConfig:
    """The config with token_dim read from the base model's text towers (their widths summed), or an error if a set
    one disagrees: an encoder made for another base model."""
    from facegen.core.errors import ConfigError

    if config.token_dim is None:
        return dataclasses.replace(config, token_dim=token_dim)
    if config.token_dim != token_dim:
        raise ConfigError(f"the M² encoder's token_dim is {config.token_dim} but the base model's text towers take "
                          f"{token_dim}-d tokens: it was made for another base model (a preset's encoder.token_dim: "
                          f"leave it unset to read it from the model)")
    return config
