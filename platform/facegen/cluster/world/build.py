"""Building the miniature world: anchors from photos, identities blended from them, their views, and base models
that draw every identity from its code (cached).

    world = build_world(analyzer, photos=None, cfg=WorldConfig())
    world.anchors, world.identities, world.split("held_out"), world.reference(name), world.input_view(name)

The base models depend only on the views, the identities and the settings, so they are built once into the cache
(`<FACEGEN_CACHE>/world/<digest>/`) and reused by every later run on the same photos.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegen.cluster.world.config import WorldConfig
from facegen.cluster.world.identities import Identity, make_identities, nearest_train
from facegen.cluster.world.people import Person, blend_views, find_people, grayscale

WORLD_VERSION = "v3"  # bump when base.py's models or training change, so caches rebuild
TOKENS_VERSION = "t1"  # the same for the SDXL-layout model of dreamidentity-sdxl (build_sdxl_tokens), cached apart
ENCODER_SIZE = 112  # the side of the views written for the encoders (the ArcFace crop)
REFERENCE, INPUT = 0, 1  # view 0: the identification reference (plain); view 1: the encoder's input when scoring


@dataclass
class World:
    config: WorldConfig
    anchors: list[Person]
    identities: list[Identity]
    views: dict[str, np.ndarray]  # name → 2 + cfg.views views, ENCODER_SIZE²: reference, input, training views
    sd21: Path  # the SD2.1-layout base model directory
    sdxl: Path  # the SDXL-layout one, taught codes at FaceCLIP's id slot
    sdxl_tokens: Path  # an SDXL-layout one taught codes in S*'s slots of both towers (dreamidentity-sdxl)

    def split(self, name: str) -> list[Identity]:
        return [o for o in self.identities if o.split == name]

    def by_name(self, name: str) -> Identity:
        return next(o for o in self.identities if o.name == name)

    def reference(self, name: str) -> np.ndarray:
        """The identification reference: the plain blend (no jitter, no augmentation), at the drawings' size."""
        return self.at_size(self.views[name][REFERENCE][None])[0]

    def input_view(self, name: str) -> np.ndarray:
        """The encoder's input when scoring: its own augmentation draw, seen by no model in training."""
        return self.views[name][INPUT]

    def training_views(self, name: str) -> np.ndarray:
        return self.views[name][INPUT + 1:]

    def nearest_train(self, identity: Identity) -> Identity:
        return nearest_train(self.identities, identity)

    def at_size(self, images: np.ndarray) -> np.ndarray:
        return resize(images, self.config.size)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    import PIL.Image

    return np.stack([np.asarray(PIL.Image.fromarray(x).resize((size, size), PIL.Image.Resampling.LANCZOS)) for x in images])


def build_world(analyzer, photos=None, cfg: WorldConfig | None = None, log=print) -> World:
    cfg = cfg or WorldConfig()
    from facegen.cluster.world.people import WorldError

    if cfg.views < 1 or cfg.per_pair < 1 or cfg.identities < 1:
        raise WorldError("world.views, world.per_pair and world.identities must be ≥ 1")
    anchors = find_people(analyzer, photos, cfg.anchors, cfg.min_face)
    try:
        identities = make_identities(len(anchors), cfg.identities, cfg.validation_pairs, cfg.held_out_pairs,
                                     cfg.per_pair, cfg.min_weight, cfg.min_distance, cfg.seed)
    except ValueError as e:
        raise WorldError(f"{len(anchors)} anchor people: {e} (lower world.validation_pairs / world.held_out_pairs, "
                         "or give more people with --photos)") from None
    views = {o.name: blend_views(anchors, o.w, 2 + cfg.views, ENCODER_SIZE, cfg.seed, o.name) for o in identities}
    sd21, sdxl, sdxl_tokens = build_base_models(views, identities, cfg, log)
    return World(cfg, anchors, identities, views, sd21, sdxl, sdxl_tokens)


def model_settings(cfg: WorldConfig) -> dict:
    """The settings the base models depend on."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("min_face",)}


def world_key(views: dict[str, np.ndarray], identities: list[Identity], cfg: WorldConfig) -> str:
    """The base models' cache key: the version, their settings, the identities and their views."""
    digest = hashlib.sha256(WORLD_VERSION.encode())
    digest.update(json.dumps(model_settings(cfg), sort_keys=True).encode())
    for o in identities:
        digest.update(json.dumps(dataclasses.asdict(o)).encode())
        digest.update(views[o.name].tobytes())
    return digest.hexdigest()[:16]


def build_base_models(views: dict[str, np.ndarray], identities: list[Identity], cfg: WorldConfig,
                      log=print) -> tuple[Path, Path, Path]:
    """The base models, trained on the training identities' training views only (never a reference, an input
    view, or any validation or held-out identity): the VAE, the SD2.1- and SDXL-layout ones (one cache entry), and
    the SDXL-layout one for dreamidentity-sdxl (its own entry, on the first's VAE)."""
    from facegen.core.cache import build_once

    key = world_key(views, identities, cfg)
    train = [o for o in identities if o.split == "train"]
    colour = {o.name: resize(views[o.name][INPUT + 1:], cfg.size) for o in train}
    edited = {n: grayscale(v) for n, v in colour.items()}
    weights = {o.name: o.w.astype(np.float32) for o in train}

    def build(out: Path) -> None:
        import torch

        from facegen.cluster.world.base import build_sd21, build_sdxl, encode_images, train_vae

        torch.set_num_threads(max(1, torch.get_num_threads()))
        log(f"world: training its VAE ({cfg.vae_steps} steps) on {sum(map(len, colour.values()))} views × 2")
        vae = train_vae(np.concatenate([*colour.values(), *edited.values()]), cfg, log)
        latents = {n: encode_images(vae, v) for n, v in colour.items()}
        edited_latents = {n: encode_images(vae, v) for n, v in edited.items()}
        log(f"world: training the SD2.1-layout base model ({cfg.base_steps} steps, {len(train)} identities)")
        build_sd21(out / "sd21", vae, latents, edited_latents, weights, cfg, log)
        log(f"world: training the SDXL-layout base model ({cfg.base_steps} steps)")
        build_sdxl(out / "sdxl", vae, latents, edited_latents, weights, cfg, log)
        (out / "world.json").write_text(json.dumps({"version": WORLD_VERSION, "identities": len(identities),
                                                    **model_settings(cfg)}, indent=2) + "\n")

    root = build_once("world", key, build, marker="world.json")

    def build_tokens(out: Path) -> None:
        from diffusers import AutoencoderKL

        from facegen.cluster.world.base import build_sdxl_tokens, encode_images

        vae = AutoencoderKL.from_pretrained(root / "sd21" / "vae").eval().requires_grad_(False)
        latents = {n: encode_images(vae, v) for n, v in colour.items()}
        edited_latents = {n: encode_images(vae, v) for n, v in edited.items()}
        log(f"world: training the SDXL-layout base model for S* in both towers ({cfg.base_steps} steps)")
        build_sdxl_tokens(out / "sdxl_tokens", vae, latents, edited_latents, weights, cfg, log)
        (out / "world.json").write_text(json.dumps({"version": TOKENS_VERSION, "world": key}, indent=2) + "\n")

    tokens = build_once("world-sdxl-tokens", f"{key}-{TOKENS_VERSION}", build_tokens, marker="world.json")
    return root / "sd21", root / "sdxl", tokens / "sdxl_tokens"
