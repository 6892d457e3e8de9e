"""The miniature world's settings (`bench/learn.py --set world.KEY=VALUE`). Plain data: importing it loads no torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorldConfig:
    anchors: int = 0  # anchor people from the photos (0 = every one found)
    identities: int = 300  # training identities: the anchors themselves and blends of training pairs and triples
    validation_pairs: int = 10  # anchor pairs reserved for validation (never blended in training)
    held_out_pairs: int = 12  # anchor pairs reserved for the held-out identities (never blended in training)
    per_pair: int = 2  # validation / held-out identities per reserved pair
    min_weight: float = 0.25  # every weight of a validation / held-out identity is at least this
    min_distance: float = 0.2  # validation / held-out identities are pairwise this far apart (L2, weight space)
    views: int = 8  # training views per identity (besides view 0, the reference, and view 1, the encoder's input)
    size: int = 32  # image side; latents are size/4 (the VAE has three blocks)
    latent_channels: int = 8
    unet_width: int = 64  # the UNet's block widths are (w, 2w)
    seed: int = 0
    vae_steps: int = 1000
    # Per base model (SD2.1 and SDXL layouts). Chosen on the validation identities: the true code's identification
    # (best guidance) rose from 0.70 / 0.575 at 2,500 steps to 0.725 / 0.70 at 3,500 (SD2.1 / SDXL layout).
    base_steps: int = 3500
    batch_size: int = 32
    lr: float = 1e-3
    ema: float = 0.999  # the base models keep an exponential moving average of their weights: it draws finer blends
    edit_share: float = 0.3  # of base-model training prompts, the edited ("in black and white") ones
    uncond_share: float = 0.1  # dropped prompts, for classifier-free guidance
    # Min-SNR-γ loss weights per base model (0: the plain v loss). The previous world (10 named people, 64²) measured
    # the SD2.1 layout best on the plain loss and the SDXL layout, whose pooled text reaches every block through the
    # time embedding, best with γ = 5; kept, not retuned.
    sd21_min_snr_gamma: float = 0.0
    sdxl_min_snr_gamma: float = 5.0
    min_face: int = 56  # px: smaller faces in the photos are not anchors
