"""What every method shares: its registry entry (`Method`), its sampling defaults (`SamplingConfig`) and the
contract its parts keep. Plain data and strings: importing it loads no torch, so the registry stays light.

A method is one folder, facegen/core/methods/<name>/, built on a base-model family (facegen.core.bases):
  config.py    its preset section (a dataclass): base model, encoder, sampling, training settings
  encoder.py   its trainable encoder (an nn.Module with save_pretrained / from_pretrained)
  pipeline.py  its pipeline, an `identity_pipeline.IdentityPipeline` (the contract: its hooks are declared there),
               and its identity type, an `identity_pipeline.Identity`
  training.py  its training task, a `training_utils.IdentityTask`: forward(batch) returns (loss, metrics)
  __init__.py  its `Method(...)` entries (one per base it runs on), added to the registry in one line
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

# What any caller may ask (facegen.core.sampling), re-exported beside the defaults and the service's caps.
from facegen.core.sampling import SAMPLING_BOUNDS, check_sampling  # noqa: F401


@dataclass
class ServiceCaps:
    """What one HTTP request may ask of this method beyond SAMPLING_BOUNDS: the service's own limits, reported by
    `GET /v1/models` (a 422 names the one a request passes)."""

    max_steps: int = 100
    max_images: int = 4
    max_side: int = 2048
    min_side: int = 256  # the invisible watermark on every served image needs 256 px a side


@dataclass
class SamplingConfig:
    """Sampling defaults of one method (the CLI, the Python API, evaluation and the HTTP service fall back to these,
    through `resolve`)."""

    steps: int = 30
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    negative_prompt: str = ""
    scheduler: str = "ddim"  # ddim | euler | the base model's own ("default")
    # The work one HTTP request may ask for: width × height × steps × num_images, in millions. It bounds how long
    # one request holds a GPU; None = the method's default (its section's MAX_MEGAPIXEL_STEPS, sized for a 24 GB GPU).
    max_megapixel_steps: float | None = None
    service: ServiceCaps = field(default_factory=ServiceCaps)

    def resolve(self, steps: int | None = None, guidance_scale: float | None = None, width: int | None = None,
                height: int | None = None, negative_prompt: str | list[str] | None = None) -> SamplingConfig:
        """The one point where a request's sampling values meet the defaults: each None filled in from here, the
        result checked against SAMPLING_BOUNDS."""
        check_sampling(steps=steps, guidance_scale=guidance_scale, width=width, height=height)
        given = {"steps": steps, "guidance_scale": guidance_scale, "width": width, "height": height,
                 "negative_prompt": negative_prompt}
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})


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


MEMORY_MODES = ("none", "model_offload", "sequential_offload")


@dataclass
class MethodConfig:
    """What every method's preset section (`methods.<name>`) holds; a method's config adds its `encoder` and `train`
    sections and sets its defaults. Everything outside methods/ reads a section through these names only."""

    MAX_MEGAPIXEL_STEPS = 80.0  # one request's default work budget (megapixel-steps), see request_work
    base_model: str = ""  # a hub id (owner/name[@commit]), a local diffusers directory, tiny:* or random:*
    sha256: dict[str, str] = field(default_factory=dict)  # pins for base_model's files (relative path → hex)
    model: str | None = None  # a trained encoder (a training job's <output>/model) instead of a fresh one
    model_sha256: dict[str, str] = field(default_factory=dict)  # pins for `model`'s files (e.g. model.safetensors)
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16 (auto: fp16 on CUDA, fp32 on CPU)
    # GPU memory (CUDA only; on the CPU everything stays where it is): none = every model on the GPU; model_offload =
    # each model moves to the GPU while it runs (diffusers' enable_model_cpu_offload: SDXL in ~8 GB, FaceT5-FLUX in
    # ~24 GB, seconds more per image); sequential_offload = layer by layer (enable_sequential_cpu_offload: the least
    # memory, several times slower). Large canvases also decode tile by tile (VAE tiling) whatever the mode.
    memory: str = "none"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    controlnet: ControlNetConfig = field(default_factory=ControlNetConfig)

    def __post_init__(self):
        if self.memory not in MEMORY_MODES:
            from facegen.core.errors import ConfigError

            raise ConfigError(f"methods.<method>.memory '{self.memory}': use one of {', '.join(MEMORY_MODES)}")

    def check_model(self, model: str | None, face=None) -> None:
        """Refuse, before anything loads, a section that cannot run with this trained encoder (`model`, else the
        section's) or with the face stack `face` (the preset's `face` section; None: not checked): the CLI, the
        service builder, the pipelines' loaders and the training jobs call it. Every encoder may start fresh unless a
        method says. Published weights (a conversion, or a fine-tune of one: its sources.json) are
        insightface-profile only."""
        from facegen.core.face.registry import check_insightface_profile
        from facegen.core.models.export import from_published

        weights = model or self.model
        if face is not None and weights and from_published(weights):
            check_insightface_profile(face, f"{weights} (converted from published weights)")

    def settle_face_stack(self, face) -> None:
        """Fill in what a fresh encoder takes from the face stack (the preset's `face` section), once the preset is
        read: nothing unless a method says."""

    @property
    def face_size(self) -> int:
        """The side of the aligned face crop the method's encoder reads (training data is cut to it)."""
        raise NotImplementedError


def _load(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Converter:
    """A `python -m facegen convert <name>` target: published weights → this method's export (`--model DIR`)."""

    name: str  # the command's target, e.g. faceclip-official
    function: str  # "module:function", called as function(out=, preset=, **files) and returning the files written
    files: tuple[tuple[str, str, bool], ...]  # (flag without dashes, help, required)
    preset: str  # the default --preset: it sizes the architecture and names the base model
    help: str = ""

    def run(self, out, preset, **files):
        return _load(self.function)(out=out, preset=preset, **files)


@dataclass(frozen=True)
class Method:
    """One registry entry: a method on a base-model family, and where its parts live (imported on first use). Two
    entries may share a pipeline, identity and task (DreamIdentity on SD 2.1 and on SDXL): the entry's `base` is
    what differs, and the pipeline reads it from the entry it is built for."""

    name: str  # the CLI's --method, the HTTP `method`, the preset's methods.<name> section
    title: str  # as people write it: deployment names (<title>Generator), reports
    base: str  # the base-model family it runs on (facegen.core.bases: sd21 | sdxl | flux)
    config: type  # the preset section's dataclass
    pipeline: str  # "module:Class" of its pipeline
    identity: str  # "module:Class" of its identity type
    task: str  # "module:Class" of its training task
    needs_placeholder: bool  # prompts must say where the person goes ("S*")
    summary: str = ""
    converters: tuple[Converter, ...] = ()  # published weights this method can convert
    job: str = ""  # the training job's name (jobs/<job>.py, the output folder): train_m2 | train_faceclip | …

    @property
    def base_family(self):
        """The base-model family (facegen.core.bases), torch-free."""
        from facegen.core.bases import get_base

        return get_base(self.base)

    @property
    def size_multiple(self) -> int:
        """Output sides must be multiples of this: the base's (FLUX packs 2×2 latents: 16)."""
        return self.base_family.config.size_multiple

    @property
    def native_pixels(self) -> int:
        """The base's native canvas in pixels: larger canvases cost more than their pixels (request_work)."""
        return self.base_family.native_pixels()

    def check_inputs(self, prompt, negative_prompt: str | list[str] = "", height: int | None = None,
                     width: int | None = None) -> list[str]:
        """The method's input check, without torch: the pipeline's `check_inputs` is this, and the CLI and the HTTP
        ingress run it before any model loads. Returns the negative prompts, one per prompt."""
        from facegen.core.prompts import as_prompts, check_common_inputs

        return check_common_inputs(as_prompts(prompt), negative_prompt, height, width, self.needs_placeholder,
                                   self.size_multiple)

    def pipeline_class(self):
        return _load(self.pipeline)

    def identity_class(self):
        return _load(self.identity)

    def task_class(self):
        return _load(self.task)

    def load_pipeline(self, preset, model=None, torch_dtype=None, device=None, face_analyzer=None):
        """This entry's pipeline as the preset (name, file or Preset) configures its section."""
        return self.pipeline_class().from_preset(preset, model=model, torch_dtype=torch_dtype, device=device,
                                                 face_analyzer=face_analyzer, method=self.name)

    def load_face_encoder(self, preset, model=None, device=None):
        """The face stack and this entry's encoder face side alone (photos → identity): no diffusion model."""
        return self.pipeline_class().load_face_encoder(preset, model=model, device=device, method=self.name)

    def load_task(self, preset, device="cpu", frozen_dtype=None, load_base: bool = True):
        """This entry's training task over its own section and the preset's train section."""
        import torch

        return self.task_class()(self, preset.method(self.name), preset.train, device,
                                 frozen_dtype or torch.float32, load_base, clip=preset.clip)

    def check_training(self, preset, rows: int) -> None:
        """Before any worker starts: what the task would refuse about its section, the face stack and the data."""
        section = preset.method(self.name)
        section.check_model(None, preset.face)
        self.task_class().check_config(section, rows)


# A ControlNet runs a copy of the UNet's encoder half beside it at every step: about half as much work again.
CONTROL_COST = 1.5
# What each output image costs after denoising — the VAE decoding its pixels (its mid-block attends over them too),
# the watermark and the PNG/JPEG/WebP encoding — counted as this many denoising steps at its size. A request of few
# steps on a huge canvas is mostly this work: 4 × 2048² at 3 steps took 180 s on the tiny models.
IMAGE_STEPS = 2.0


def request_work(width: int, height: int, steps: int, images: int, native_pixels: int, control: bool) -> float:
    """One request's work in megapixel-steps, weighted for what grows faster than pixels: self-attention is
    quadratic in tokens, so a canvas larger than the method's native one counts (pixels ÷ native) times over, a
    ControlNet adds CONTROL_COST to each step, and each image's decoding and encoding adds IMAGE_STEPS."""
    pixels = width * height
    per_step = CONTROL_COST if control else 1.0
    return pixels / 1e6 * images * max(1.0, pixels / native_pixels) * (steps * per_step + IMAGE_STEPS)


def work_budget(section) -> float:
    """A method section's budget for one request, in megapixel-steps (its sampling setting, else its default)."""
    return section.sampling.max_megapixel_steps or section.MAX_MEGAPIXEL_STEPS
