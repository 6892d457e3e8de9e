"""Building the miniature world: its people, their views, and base models that know them by name (cached).

    world = build_world(analyzer, photos=None, cfg=WorldConfig())
    world.people, world.sd21, world.sdxl, world.references, world.eval_view(name)

The base models depend only on the people's views and the settings, so they are built once into the cache
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
from facegen.cluster.world.people import Person, find_people, grayscale, views

WORLD_VERSION = "v2"  # bump when base.py's models or training change, so caches rebuild
ENCODER_SIZE = 112  # the side of the views written for the encoders (the ArcFace crop)


@dataclass
class World:
    config: WorldConfig
    people: list[Person]
    views: dict[str, np.ndarray]  # name → cfg.views aligned views, ENCODER_SIZE²; view 0 is the evaluation view
    references: np.ndarray  # N×512 ArcFace embeddings of each person's plain aligned face (identification)
    sd21: Path  # the SD2.1-layout base model directory
    sdxl: Path  # the SDXL-layout one

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.people]

    @property
    def held_in(self) -> list[str]:
        return [p.name for p in self.people if not p.held_out]

    @property
    def held_out(self) -> list[str]:
        return [p.name for p in self.people if p.held_out]

    def eval_view(self, name: str) -> np.ndarray:
        """The view the encoders never see in training: the encoder's input when scoring."""
        return self.views[name][0]

    def training_views(self, name: str) -> np.ndarray:
        return self.views[name][1:]

    def at_size(self, images: np.ndarray) -> np.ndarray:
        return resize(images, self.config.size)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    import PIL.Image

    return np.stack([np.asarray(PIL.Image.fromarray(x).resize((size, size), PIL.Image.Resampling.LANCZOS)) for x in images])


def build_world(analyzer, photos=None, cfg: WorldConfig | None = None, log=print) -> World:
    cfg = cfg or WorldConfig()
    from facegen.cluster.world.people import WorldError

    if cfg.held_out < 0 or cfg.views < 2:
        raise WorldError("world.held_out must be ≥ 0 and world.views ≥ 2")
    people = find_people(analyzer, photos, cfg.identities, cfg.min_face)
    if len(people) - cfg.held_out < 1:
        raise WorldError(f"{len(people)} people and world.held_out={cfg.held_out}: at least one must be held in")
    for p in people[len(people) - cfg.held_out:]:
        p.held_out = True
    all_views = {p.name: views(p, cfg.views, ENCODER_SIZE, cfg.seed) for p in people}
    plain = [v[0] for v in all_views.values()]
    references = analyzer.embed_aligned(plain)
    sd21, sdxl = build_base_models(all_views, cfg, log)
    return World(cfg, people, all_views, references, sd21, sdxl)


def model_settings(cfg: WorldConfig) -> dict:
    """The settings the base models depend on (not which of the people are held out)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("identities", "held_out", "min_face")}


def world_key(all_views: dict[str, np.ndarray], cfg: WorldConfig) -> str:
    """The base models' cache key: the version, their settings and the people's views."""
    digest = hashlib.sha256(WORLD_VERSION.encode())
    digest.update(json.dumps(model_settings(cfg), sort_keys=True).encode())
    for name in sorted(all_views):
        digest.update(name.encode())
        digest.update(all_views[name].tobytes())
    return digest.hexdigest()[:16]


def build_base_models(all_views: dict[str, np.ndarray], cfg: WorldConfig, log=print) -> tuple[Path, Path]:
    from facegen.core.cache import build_once

    key = world_key(all_views, cfg)

    def build(out: Path) -> None:
        import torch

        from facegen.cluster.world.base import build_sd21, build_sdxl, encode_images, train_vae

        torch.set_num_threads(max(1, torch.get_num_threads()))
        colour = {n: resize(v, cfg.size) for n, v in all_views.items()}
        edited = {n: grayscale(v) for n, v in colour.items()}
        log(f"world: training its VAE ({cfg.vae_steps} steps) on {sum(map(len, colour.values()))} views × 2")
        vae = train_vae(np.concatenate([*colour.values(), *edited.values()]), cfg, log)
        latents = {n: encode_images(vae, v) for n, v in colour.items()}
        edited_latents = {n: encode_images(vae, v) for n, v in edited.items()}
        log(f"world: training the SD2.1-layout base model ({cfg.base_steps} steps)")
        build_sd21(out / "sd21", vae, latents, edited_latents, cfg, log)
        log(f"world: training the SDXL-layout base model ({cfg.base_steps} steps)")
        build_sdxl(out / "sdxl", vae, latents, edited_latents, cfg, log)
        (out / "world.json").write_text(json.dumps({"version": WORLD_VERSION, "people": sorted(all_views),
                                                    **model_settings(cfg)}, indent=2) + "\n")

    root = build_once("world", key, build, marker="world.json")
    return root / "sd21", root / "sdxl"
