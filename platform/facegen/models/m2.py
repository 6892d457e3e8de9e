"""DreamIdentity's M² encoder: multi-scale face features → k pseudo-word embeddings "S*".

V = [v_3, v_6, v_9, v_12, v_final]: the face ViT's hidden states after the quarter blocks, each mean-pooled, and its
final identity vector, concatenated. k separate MLPs map V to k vectors in the text encoder's token-embedding space;
a prompt's "S*" is replaced by them. `regularization_loss` is the paper's λ·Σ‖s_i‖ term that keeps the embeddings
near the scale of real words so the prompt's other words still steer the image (editability).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from diffusers import ModelMixin
from torch import nn

from facegen.models.export import read_export, save_export
from facegen.models.face_vit import FaceViT, faces_to_tensor, load_arcface_checkpoint


class M2Encoder(ModelMixin):
    # A diffusers ModelMixin so DiffusionPipeline.save_pretrained / from_pretrained treat it as a component; the
    # on-disk format is facegen's own (config.json + model.safetensors), written and read by the overrides below.

    @dataclass
    class Config:
        vit: FaceViT.Config = field(default_factory=FaceViT.Config)
        num_tokens: int = 2  # k
        token_dim: int = 1024  # the text encoder's token-embedding width (SD2.1: 1024)
        hidden_dim: int = 1024
        taps: list[int] | None = None  # 1-based block indices; None = the quarters of the depth
        reg_weight: float = 1e-4  # λ
        train_vit: bool = False
        weights: str | None = None  # a directory exported by save_pretrained (e.g. by jobs/train_m2.py)
        seed: int = 0  # random initialisation of untrained projectors, so the tiny preset is reproducible

    def __init__(self, config: M2Encoder.Config):
        super().__init__()
        self.m2_config = config
        self.vit = FaceViT(config.vit)
        self.taps = list(config.taps or self.vit.default_taps())
        bad = [t for t in self.taps if not 1 <= t <= config.vit.depth]
        if bad:
            raise ValueError(f"m2.taps {bad} outside the face ViT's {config.vit.depth} blocks")
        in_dim = config.vit.embed_dim * len(self.taps) + config.vit.num_features
        self.norm = nn.LayerNorm(in_dim)
        self.projectors = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, config.hidden_dim), nn.GELU(), nn.Linear(config.hidden_dim, config.token_dim))
            for _ in range(config.num_tokens)
        )
        self.vit.requires_grad_(config.train_vit)

    @classmethod
    def from_config_random(cls, config: M2Encoder.Config) -> M2Encoder:
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
        """Aligned 112×112 RGB uint8 faces (one array, a stack or a list) → B×k×token_dim."""
        return self(faces_to_tensor(faces))

    @staticmethod
    def regularization_loss(embeddings: torch.Tensor) -> torch.Tensor:
        """Σ_i ‖s_i‖₂, averaged over the batch (multiply by config.reg_weight for the paper's λ term)."""
        return embeddings.norm(dim=-1).sum(dim=-1).mean()

    # -- persistence ---------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **_ignored) -> None:
        """config.json + model.safetensors, written under temporary names and renamed (never half-written)."""
        save_export(save_directory, self, self.m2_config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, torch_dtype: torch.dtype | None = None, **_ignored):
        _, config, state = read_export(directory, M2Encoder.Config, "M² encoder", "m2")
        model = cls(config)
        model.load_state_dict(state)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        return model.eval()
