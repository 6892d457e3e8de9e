"""The miniature world's settings (`bench/learn.py --set world.KEY=VALUE`). Plain data: importing it loads no torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorldConfig:
    identities: int = 10  # people in the world (0 = every one found)
    held_out: int = 2  # the last ones: known to the base models by name, never shown to an identity encoder
    views: int = 24  # augmented views per person the base models (and, all but the evaluation view, the encoders) see
    size: int = 64  # image side; latents are size/4
    latent_channels: int = 16
    seed: int = 0
    vae_steps: int = 800
    base_steps: int = 1200  # per base model (SD2.1 and SDXL layouts)
    batch_size: int = 16
    lr: float = 1e-3
    edit_share: float = 0.3  # of base-model training prompts, the edited ("in black and white") ones
    uncond_share: float = 0.1  # dropped prompts, for classifier-free guidance
    # Min-SNR-γ loss weights per base model (0: the plain v loss). Measured (10 people, guidance 3, 1,200 steps): the
    # SD2.1 layout drew its people with identification 0.875 on the plain loss and 0.50 with γ = 5; the SDXL layout,
    # whose pooled text reaches every block through the time embedding, 0.86 with γ = 5.
    sd21_min_snr_gamma: float = 0.0
    sdxl_min_snr_gamma: float = 5.0
    min_face: int = 56  # px: smaller faces in the photos are not used
