"""What every method shares: its registry entry (`Method`), its sampling defaults (`SamplingConfig`) and the
contract its parts keep. Plain data and strings: importing it loads no torch, so the registry stays light.

A method is one folder, facegen/methods/<name>/:
  config.py    its preset section (a dataclass): base model, encoder, sampling, training settings
  encoder.py   its trainable encoder (an nn.Module with save_pretrained / from_pretrained)
  pipeline.py  its diffusers pipeline; `from_preset`, `load_face_encoder` (face → identity without the diffusion
               model), `check_inputs`, `encode_identity`, `__call__`; and its identity type
  training.py  its training task: an nn.Module whose forward(batch) returns (loss, metrics)
  __init__.py  its `METHOD = Method(...)` entry, added to facegen/methods/__init__.py's registry in one line
An identity type has `to_arrays()` / `from_arrays()` (what HTTP identity tokens carry), `mean(list)` (several
photos of one person) and `stack(list)` (one per image of a batch).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass
class SamplingConfig:
    """Sampling defaults of one method (the CLI, the Python API, evaluation and the HTTP service fall back to these)."""

    steps: int = 30
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    negative_prompt: str = ""
    scheduler: str = "ddim"  # ddim | euler | the base model's own ("default")
    # The work one HTTP request may ask for: width × height × steps × num_images, in millions. It bounds how long
    # one request holds a GPU; None = the method's default (its section's MAX_MEGAPIXEL_STEPS, sized for a 24 GB GPU).
    max_megapixel_steps: float | None = None


@dataclass
class ControlNetConfig:
    """A method's ControlNet for scene switch (head box / pose / control image), loaded on first use."""

    # A ControlNet in the diffusers layout for the method's base model: a hub id, a local directory, or
    # tiny:controlnet-sd21 / tiny:controlnet-sdxl. None: control inputs are refused with a clear error.
    model: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)  # pins for its files
    render: str = "openpose"  # how a head box + pose is drawn: keypoints (InstantID-style) | openpose
    scale: float = 1.0  # controlnet_conditioning_scale
    start: float = 0.0  # control_guidance_start: the fraction of the steps where control begins
    end: float = 1.0  # control_guidance_end


def _load(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Method:
    """One registry entry: the method's name and where its parts live (imported on first use)."""

    name: str  # the CLI's --method, the HTTP `method`, the preset's methods.<name> section
    title: str  # as people write it: deployment names (<title>Generator), reports
    config: type  # the preset section's dataclass
    pipeline: str  # "module:Class" of its pipeline
    identity: str  # "module:Class" of its identity type
    task: str  # "module:Class" of its training task
    needs_placeholder: bool  # prompts must say where the person goes ("S*")
    summary: str = ""

    def pipeline_class(self):
        return _load(self.pipeline)

    def identity_class(self):
        return _load(self.identity)

    def task_class(self):
        return _load(self.task)


# A ControlNet runs a copy of the UNet's encoder half beside it at every step: about half as much work again.
CONTROL_COST = 1.5


def request_work(width: int, height: int, steps: int, images: int, native_pixels: int, control: bool) -> float:
    """One request's work in megapixel-steps, weighted for what grows faster than pixels: self-attention is
    quadratic in tokens, so a canvas larger than the method's native one counts (pixels ÷ native) times over, and a
    ControlNet adds CONTROL_COST."""
    pixels = width * height
    return pixels / 1e6 * steps * images * max(1.0, pixels / native_pixels) * (CONTROL_COST if control else 1.0)


def work_budget(section) -> float:
    """A method section's budget for one request, in megapixel-steps (its sampling setting, else its default)."""
    return section.sampling.max_megapixel_steps or section.MAX_MEGAPIXEL_STEPS
