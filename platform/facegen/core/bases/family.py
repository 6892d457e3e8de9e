"""What every base-model family declares (`BaseFamily.Config`) and does: load its parts in the diffusers layout, and
build the diffusers pipeline that denoises with them. The SD families (sd21, sdxl) add text towers a method can
write into (`TextTowerFamily`)."""
from __future__ import annotations

import json
from dataclasses import dataclass

from facegen.core.errors import ModelNotFound

OBJECTIVES = ("epsilon", "v_prediction", "flow_matching")


class BaseFamily:
    """One base-model family. Its parts load through `load` (a hub id with @revision, a local directory, tiny:* or
    random:*: `facegen.core.weights.resolve_model`), and `denoiser` is diffusers' own pipeline over them, given the
    conditioning a method computed (`config.conditioning`: the keyword arguments that pipeline takes)."""

    @dataclass(frozen=True)
    class Config:
        name: str  # as a Method names its base: sd21 | sdxl | flux
        title: str  # as people write it
        pipeline: str  # diffusers' pipeline class that loads and denoises this layout
        control_pipeline: str  # … and its ControlNet variant
        controlnet_class: str  # diffusers' ControlNet class for this denoiser
        control_image_argument: str  # what the ControlNet pipeline calls the control image
        denoiser: str  # the component the ControlNet steers and training targets: unet | transformer
        components: tuple[str, ...]  # the parts of the layout a pipeline holds
        text_towers: tuple[tuple[str, str], ...]  # (tokenizer, text encoder) component names, in order
        conditioning: tuple[str, ...]  # what its pipeline takes for a prompt (each also as negative_<name>)
        vae_scale_factor: int  # pixels a side per latent (a tiny or miniature VAE may differ: read its config)
        size_multiple: int  # output sides must be multiples of this
        native_canvas: tuple[int, int]  # width, height it was trained at: larger canvases cost more than pixels
        objective: str  # epsilon | v_prediction | flow_matching (an SD checkpoint's scheduler config may say v)
        schedule: str  # the training noise schedule
        default_steps: int = 30  # a fresh method section's sampling default
        default_guidance: float = 7.5

    def __init__(self, config: Config):
        assert config.objective in OBJECTIVES, config.objective
        self.config = config

    # -- loading -------------------------------------------------------------------------------------------------
    def load(self, ref: str, sha256: dict[str, str] | None = None, torch_dtype=None, skip: tuple[str, ...] = ()) -> dict:
        """The family's parts (config.components) of the model `ref` names; those in `skip` are not loaded (None):
        SDXL's UNet alone is 10 GB in fp32, FLUX's T5 9.5 GB in bf16."""
        import diffusers

        from facegen.core.weights import resolve_model

        path = resolve_model(ref, sha256)
        try:
            pipe = getattr(diffusers, self.config.pipeline).from_pretrained(
                str(path), torch_dtype=torch_dtype, **self.load_kwargs(), **{name: None for name in skip})
        except (OSError, ValueError) as e:
            raise ModelNotFound(f"{ref} is not {self.config.title} model directory: {e}") from None
        return {k: getattr(pipe, k) for k in self.config.components}

    def load_kwargs(self) -> dict:
        """What diffusers' loader needs beyond the parts (SD 2.1: no safety checker)."""
        return {}

    def read_config(self, ref: str, sha256: dict[str, str] | None, component: str) -> dict:
        """One component's config.json alone (no weights loaded)."""
        from facegen.core.weights import resolve_model

        config = resolve_model(ref, sha256) / component / "config.json"
        if not config.is_file():
            raise ModelNotFound(f"{ref} has no {component}/config.json: is it {self.config.title} model directory?")
        return json.loads(config.read_text())

    def vae_scale_factor_of(self, ref: str, sha256: dict[str, str] | None = None) -> int:
        """Pixels a side per latent of this model's VAE, from its config (diffusers' rule: 2 ** (blocks − 1))."""
        return 2 ** (len(self.read_config(ref, sha256, "vae")["block_out_channels"]) - 1)

    # -- denoising -----------------------------------------------------------------------------------------------
    def denoiser(self, parts: dict, controlnet=None):
        """diffusers' pipeline over `parts` (a method's loaded components; the text towers may be absent: the
        conditioning is given), its ControlNet variant when `controlnet` is given."""
        import diffusers

        given = {k: parts.get(k) for k in self.config.components} | self.denoiser_kwargs()
        if controlnet is not None:
            return getattr(diffusers, self.config.control_pipeline)(**given, controlnet=controlnet)
        return getattr(diffusers, self.config.pipeline)(**given)

    def denoiser_kwargs(self) -> dict:
        return {}

    def control_kwargs(self, control) -> dict:
        """A Control (image, scale, window) as the family's ControlNet pipeline takes it."""
        return {self.config.control_image_argument: control.image, "controlnet_conditioning_scale": control.scale,
                "control_guidance_start": control.start, "control_guidance_end": control.end}

    def prepare_call(self, denoiser, kwargs: dict, control: bool) -> dict:
        """The denoiser's keyword arguments, fixed where the family's ControlNet pipeline draws from the request's
        generator differently than its plain one (so a head box at scale 0 draws the same picture)."""
        return kwargs

    def native_pixels(self) -> int:
        w, h = self.config.native_canvas
        return w * h
