"""Typed configuration of the dataset build (the preset's `data:` section) and the shipped name / prompt lists."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from facegen.core.errors import ConfigError


@dataclass
class StageResources:
    """Ray resources of one stage: each actor holds its models; `pool_size` actors run side by side."""

    num_gpus: float = 0.0
    num_cpus: float = 1.0
    batch_size: int = 8
    pool_size: int = 1


def _gpu(batch: int) -> StageResources:
    return StageResources(num_gpus=1.0, num_cpus=1.0, batch_size=batch, pool_size=1)


@dataclass
class DataConfig:
    # The method whose base model draws the set (its methods.<name>.base_model and sampling scheduler); unset: the
    # preset's first method on a Stable Diffusion base (sd21, sdxl), e.g. dreamidentity in tiny and production.
    method: str | None = None
    # What to draw. Templates use "S*" where the subject's name goes: it is filled in to draw, and stays in the stored prompt.
    source_prompt: str = "S* face, looking at the camera"
    edit_prompts: list[str] | None = None  # None = the shipped list (facegen/core/config/edit_prompts.txt)
    max_prompts: int | None = None  # use only the first N edit prompts (quick runs)
    negative_prompt: str = ""
    steps: int = 30
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    seed: int = 0
    # Filtering.
    min_face_size: int = 128  # keep a source face only if its box's short side is larger (pixels)
    face_size: int = 112  # aligned crop stored as source_face (training resizes it to each encoder's face ViT)
    keep_fraction: float = 0.25  # per prompt, the top fraction by id_weight·id_score + clip_weight·clip_score/100
    id_weight: float = 1.0
    clip_weight: float = 1.0
    # The generated image IS the aligned face crop: no detection. For generators that draw no detectable face
    # (the tiny preset's random model) and pre-aligned sources. FFHQ ingest always detects.
    assume_aligned: bool = False
    cache_latents: bool = False  # store VAE latents of each target image with its row
    # FFHQ ingest.
    ffhq_size: int = 512  # target images are centre-cropped squares of this size
    ffhq_captions: list[str] = field(default_factory=lambda: [
        "a photo of S*", "a close-up photo of S*", "S* face, looking at the camera", "a portrait of S*",
        "a photo of S*, high quality", "a headshot of S*",
    ])
    # Ray resources per stage, and rows per Parquet shard.
    generate: StageResources = field(default_factory=lambda: _gpu(8))
    align: StageResources = field(default_factory=lambda: StageResources(batch_size=16))
    edit: StageResources = field(default_factory=lambda: _gpu(8))
    score: StageResources = field(default_factory=lambda: _gpu(32))
    latents: StageResources = field(default_factory=lambda: _gpu(32))
    ffhq: StageResources = field(default_factory=lambda: StageResources(batch_size=16))
    write: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.5, batch_size=256))
    # A cluster with no GPU at all (a laptop, CI) runs the GPU stages on CPU instead of waiting forever. On an
    # autoscaling cluster whose GPU workers start at zero, set this false so the GPU requests scale them up.
    cpu_fallback: bool = True

    def prompts(self) -> list[str]:
        prompts = list(self.edit_prompts) if self.edit_prompts is not None else shipped_list("edit_prompts.txt")
        if self.max_prompts is not None:
            prompts = prompts[: self.max_prompts]
        if not prompts:
            raise ConfigError("data.edit_prompts is empty")
        bad = [p for p in prompts if "S*" not in p]
        if bad:
            raise ConfigError(f"edit prompt '{bad[0]}' has no S* (where the name goes)")
        return prompts


def shipped_list(name: str) -> list[str]:
    return parse_list(resources.files("facegen.core.config").joinpath(name).read_text(encoding="utf-8"))


def parse_list(text: str) -> list[str]:
    """One entry per line; blank lines and #-comments dropped; duplicates dropped, first occurrence kept."""
    seen, out = set(), []
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item and item.casefold() not in seen:
            seen.add(item.casefold())
            out.append(item)
    return out


def read_names(path: str | None) -> list[str]:
    """The celebrity names: the shipped list, or a user's UTF-8 file with one name per line."""
    if path is None:
        return shipped_list("celebrities.txt")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"--celebrities {path}: no such file")
    try:
        names = parse_list(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"--celebrities {path} is not UTF-8 text (one name per line)") from None
    if not names:
        raise ConfigError(f"--celebrities {path} holds no names (one name per line)")
    bad = [n for n in names if "S*" in n]
    if bad:
        raise ConfigError(f"--celebrities {path}: '{bad[0]}' contains S*")
    return names
