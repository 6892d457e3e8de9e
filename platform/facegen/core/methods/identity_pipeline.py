"""The contract every method's pipeline keeps, as code: `IdentityPipeline`, a diffusers `DiffusionPipeline` built for
one registry entry (`Method`: the method and its base-model family), with the hooks a method writes declared below,
and the parts every method shares — preset loading, the input check, the face stack as a component, scene switch
and the `__call__` in diffusers' numbered steps, drawing one resolved request (`GenerationPlan`). An `Identity` is
what a method's face encoder gives: one person, as HTTP identity tokens carry it (docs/DESIGN.md "Methods")."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from facegen.core.errors import BadPrompt, ConfigError
from facegen.core.face.analyzer import FaceAnalyzer
from facegen.core.face.images import ImageInput, load_image
from facegen.core.methods.pipeline_utils import FaceIdentityEncoder, detect_faces, fit_vae_to
from facegen.core.plan import GenerationPlan


@dataclass
class IdentityPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray


class Identity:
    """A method's identity type: one person's conditioning, as its face encoder gives it."""

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named float32 arrays: what an HTTP identity token carries."""
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]):
        raise NotImplementedError

    @classmethod
    def mean(cls, items: Sequence):
        """Several photos of one person → one identity."""
        raise NotImplementedError

    @classmethod
    def stack(cls, items: Sequence):
        """One identity per image of a batch → one batched identity."""
        raise NotImplementedError


class OneTensorIdentity(Identity):
    """An identity that is one tensor (a dataclass whose only field is named by `field`); HTTP identity tokens carry
    it under `array_key`. Several photos of one person: the mean; a batch: stacked."""

    field = ""
    array_key = ""

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {self.array_key: getattr(self, self.field).detach().float().cpu().numpy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]):
        import torch

        return cls(torch.from_numpy(np.asarray(arrays[cls.array_key], np.float32)))

    @classmethod
    def mean(cls, items: Sequence):
        import torch

        return cls(torch.stack([getattr(i, cls.field) for i in items]).mean(dim=0))

    @classmethod
    def stack(cls, items: Sequence):
        import torch

        return cls(torch.stack([getattr(i, cls.field) for i in items]))


# The hooks a method's pipeline writes; a class that sets `default_method` (a concrete method) must define them all.
HOOKS = ("from_section", "face_reader", "encode_conditioning")


class IdentityPipeline(DiffusionPipeline):
    _optional_components = ["face_analyzer", "controlnet"]
    output_class = IdentityPipelineOutput
    default_method = ""  # the registry entry `from_preset` builds when no `method=` is given
    encoder_label = ""  # what a pin mismatch calls the method's trained encoder ("the trained FaceCLIP encoder")
    face_encoder_class: type[FaceIdentityEncoder] = FaceIdentityEncoder
    encoder_component = ""  # the component holding the method's encoder; its face_reader() is the face side alone

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.default_method:
            missing = [h for h in HOOKS if getattr(cls, h).__qualname__.startswith("IdentityPipeline.")]
            if missing:
                raise TypeError(f"{cls.__name__} does not define the pipeline hooks {', '.join(missing)}")

    # == the hooks a method writes ================================================================================
    @classmethod
    def from_section(cls, method, section, face_config, model: str | os.PathLike | None = None, torch_dtype=None,
                     device=None, face_analyzer: FaceAnalyzer | None = None) -> IdentityPipeline:
        """The pipeline of registry entry `method` from its preset section (`methods.<name>`) and the face stack's
        config — never the whole preset: its base model loaded through `method.base_family`, its encoder (`model`,
        else the section's, else fresh), placed on `device` in the section's dtype."""
        raise NotImplementedError

    @classmethod
    def face_reader(cls, method, section, weights):
        """The encoder's face side alone (what `face_encoder_class` reads faces with) from `weights`, or fresh."""
        raise NotImplementedError

    def encode_conditioning(self, prompts: list[str], negatives: list[str], identity) -> dict:
        """The prompts with the person in them, and the negatives, as the base's diffusers pipeline takes them
        (`self.base.config.conditioning`, each also as negative_<name>)."""
        raise NotImplementedError

    def register_sampling(self, method: str, **given) -> None:
        """Register the entry's name and the sampling defaults (num_inference_steps, guidance_scale, height, width,
        negative_prompt) in the config: each given one as it is (a preset section's, or a saved pipeline's), the
        others from the entry's section class — where every default is written, once."""
        from facegen.core.methods import get_method

        d = get_method(method).config().sampling
        own = {"num_inference_steps": d.steps, "guidance_scale": d.guidance_scale, "height": d.height,
               "width": d.width, "negative_prompt": d.negative_prompt}
        self.register_to_config(method=method, **{k: own[k] if given.get(k) is None else given[k] for k in own})

    # == the registry entry and its base ==========================================================================
    @property
    def method(self):
        """The registry entry this pipeline was built for (saved in its config by name)."""
        from facegen.core.methods import get_method

        return get_method(self.config.method)

    @property
    def base(self):
        """The base-model family it draws with (facegen.core.bases)."""
        return self.method.base_family

    @property
    def denoising_model(self):
        """The network the ControlNet steers (the UNet; FLUX's transformer): the ControlNet takes its dtype and device."""
        return getattr(self, self.base.config.denoiser)

    def denoiser(self, control: bool):
        """The base's diffusers pipeline over this pipeline's modules (its ControlNet pipeline under control); the
        text towers it lacks are None: the conditioning is given."""
        parts = {name: getattr(self, name, None) for name in self.base.config.components}
        return self.base.denoiser(parts, self.controlnet if control else None)

    # == construction =============================================================================================
    @classmethod
    def resolve_method(cls, method: str | None):
        """The registry entry a class builds: `method` (a name), else the class's default; it must be this class's."""
        from facegen.core.methods import get_method

        entry = get_method(method or cls.default_method)
        if not issubclass(cls, entry.pipeline_class()):
            raise ConfigError(f"method '{entry.name}' is not drawn by {cls.__name__}")
        return entry

    @classmethod
    def encoder_weights(cls, section, model: str | os.PathLike | None = None, face=None) -> str | os.PathLike | None:
        """The trained encoder to load — `model`, else the section's — once the section accepts it with the face
        stack `face` (`check_model`) and its sha256 pin holds; None: the method's fresh encoder."""
        from facegen.core.pins import verify_sha256

        weights = model or section.model
        section.check_model(weights, face)
        if weights:
            verify_sha256(weights, section.model_sha256, cls.encoder_label)
        return weights

    @classmethod
    def from_preset(cls, preset="tiny", overrides: Sequence[str] = (), model=None, torch_dtype=None, device=None,
                    face_analyzer: FaceAnalyzer | None = None, method: str | None = None):
        """The pipeline as the preset's `methods.<method>` section configures it (method: a registry entry this class
        draws, default `default_method`): `model` = a trained or converted export replacing the section's;
        dtype/device as `facegen.core.devices.resolve` decides unless given; `face_analyzer` = one already built
        from the preset's `face` section (the CLI's, which checked the photos)."""
        from facegen.core.config import as_preset

        entry = cls.resolve_method(method)
        p = as_preset(preset, overrides)
        return cls.from_section(entry, p.method(entry.name), p.face, model=model, torch_dtype=torch_dtype,
                                device=device, face_analyzer=face_analyzer)

    @classmethod
    def load_face_encoder(cls, preset="tiny", model=None, device=None, method: str | None = None):
        """The face stack and the encoder's face side alone (photos → identity), for a replica that only encodes
        faces: no diffusion model, no text encoders."""
        from facegen.core import devices
        from facegen.core.config import as_preset

        entry = cls.resolve_method(method)
        p = as_preset(preset)
        section = p.method(entry.name)
        reader = cls.face_reader(entry, section, cls.encoder_weights(section, model, p.face))
        return cls.face_encoder_class(FaceAnalyzer(p.face), reader).to(devices.resolve(section.dtype, device).device)

    # == the face stack, a component diffusers cannot save itself ==================================================
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, face_analyzer: FaceAnalyzer | None = None, **kwargs):
        if face_analyzer is None:
            saved = Path(pretrained_model_name_or_path) / "face_analyzer"
            face_analyzer = FaceAnalyzer.from_pretrained(saved) if saved.is_dir() else FaceAnalyzer()
        return super().from_pretrained(pretrained_model_name_or_path, face_analyzer=face_analyzer, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        pipeline_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
        level = pipeline_logger.level
        pipeline_logger.setLevel(logging.ERROR)  # it warns that it cannot save the ONNX-backed component
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            pipeline_logger.setLevel(level)
        if self.face_analyzer is not None:
            self.face_analyzer.save_pretrained(Path(save_directory) / "face_analyzer")

    @property
    def face_encoder(self) -> FaceIdentityEncoder:
        """This pipeline's face stack and its loaded encoder's face side: photos → identity."""
        return self.face_encoder_class(self.face_analyzer, getattr(self, self.encoder_component).face_reader())

    def encode_identity(self, image):
        """One photo, or several of one person (averaged) → this method's identity."""
        if self.face_analyzer is None:
            raise ConfigError("this pipeline has no face_analyzer: pass identity= or build it with from_preset")
        return self.face_encoder.encode_identity(image)

    # == inputs ===================================================================================================
    def check_inputs(self, prompt, negative_prompt="", height: int | None = None, width: int | None = None) -> list[str]:
        """The method's input check (`Method.check_inputs`, torch-free: the CLI and the ingress run the same one):
        sizes, S* where the method needs it, one negative prompt per prompt (returned)."""
        return self.method.check_inputs(prompt, negative_prompt, height, width)

    def check_prompt_tokens(self, prompt: str | list[str]) -> None:
        """Refuse a prompt whose tokens this method cannot condition on (the service checks each request alone,
        before it shares a batch). Nothing to refuse by default: the face needs no slot in the prompt, or its slot is
        in a prefix within the tokenizer's length (a long prompt is truncated after it); DreamIdentity overrides."""
        from facegen.core.prompts import as_prompts

        as_prompts(prompt)

    def guidance_kwargs(self, guidance_scale: float) -> dict:
        """The guidance scale as the denoiser takes it (classifier-free guidance, diffusers' name)."""
        return {"guidance_scale": guidance_scale}

    @property
    def sampling(self):
        """The pipeline's sampling defaults (its preset section's, registered in its config) as a SamplingConfig."""
        from facegen.core.methods.base import SamplingConfig

        c = self.config
        return SamplingConfig(steps=c.num_inference_steps, guidance_scale=c.guidance_scale, width=c.width,
                              height=c.height, negative_prompt=c.negative_prompt)

    # == scene switch =============================================================================================
    @property
    def control_config(self):
        """The method's `methods.<name>.controlnet` section (from_preset sets it)."""
        from facegen.core.methods.base import ControlNetConfig

        return getattr(self, "_control_config", None) or ControlNetConfig()

    @control_config.setter
    def control_config(self, value) -> None:
        self._control_config = value

    def load_controlnet(self):
        """The base's ControlNet class, loaded on first use so a pipeline that never gets a control input never holds
        one."""
        if getattr(self, "controlnet", None) is None:
            import diffusers

            from facegen.core.errors import ModelNotFound
            from facegen.core.weights import resolve_model

            c, cls = self.control_config, self.base.config.controlnet_class
            if not c.model:
                raise ConfigError("no ControlNet is configured for this method, so head_box / control_image cannot be "
                                  "used: set methods.<method>.controlnet.model (a hub id or a local directory)")
            model = self.denoising_model
            try:
                net = getattr(diffusers, cls).from_pretrained(str(resolve_model(c.model, c.sha256)),
                                                              torch_dtype=model.dtype)
            except (OSError, ValueError) as e:
                raise ModelNotFound(f"{c.model} is not a {cls} in the diffusers layout: {e}") from None
            self.register_modules(controlnet=net.to(model.device))
        return self.controlnet

    def make_control(self, rules, width: int, height: int, n: int, pose=None):
        """The Control of a request whose scene-switch rules were checked once (`facegen.core.control.resolve`'s
        ControlPlan): a head box drawn into its keypoint map once — posed as `pose` = (kps 5×2, face box), else
        frontal — or the given control image(s) at the canvas size; one image per prompt."""
        from facegen.core.control import Control, head_control_image, resize_note

        if rules.head_box is not None:
            images = [head_control_image(width, height, rules.head_box, pose, self.control_config.render)] * n
        else:
            given = rules.control_image
            given = list(given) if isinstance(given, (list, tuple)) else [given] * n
            if len(given) != n:
                raise BadPrompt(f"{len(given)} control images for {n} prompts")
            images = [resize_note(PIL.Image.fromarray(load_image(img)), width, height) for img in given]
        self.load_controlnet()
        return Control(image=images, scale=rules.scale, start=rules.start, end=rules.end)

    def plan(self, n: int, num_inference_steps: int | None = None, guidance_scale: float | None = None,
             height: int | None = None, width: int | None = None, negative_prompt: str | list[str] | None = None,
             num_images_per_prompt: int = 1, head_box=None, pose_image: ImageInput | None = None,
             face_image=None, control_image=None, control_scale: float | None = None,
             control_start: float | None = None, control_end: float | None = None) -> GenerationPlan:
        """A Python caller's request for `n` prompts, resolved once: the sampling defaults filled in and checked, the
        scene-switch rules checked and the control image made (a head box posed as pose_image's face, else the first
        face photo's, else frontal)."""
        from facegen.core.control import resolve

        s = self.sampling.resolve(num_inference_steps, guidance_scale, width, height, negative_prompt)
        rules = resolve(self.control_config, s.width, s.height, head_box, pose_image, control_image, control_scale,
                        control_start, control_end)
        control = None
        if rules is not None:
            pose = None
            source = pose_image if pose_image is not None else _first_photo(face_image)
            if rules.head_box is not None and source is not None:
                _, face = self.face_analyzer.largest(source, "the pose photo" if pose_image is not None else
                                                     "the face photo")
                pose = (face.kps, face.bbox)
            control = self.make_control(rules, s.width, s.height, n, pose)
        return GenerationPlan.from_sampling(s, num_images_per_prompt, control)

    # == drawing ==================================================================================================
    def __call__(self, prompt, identity=None, face_image: ImageInput | Sequence[ImageInput] | None = None,
                 plan: GenerationPlan | None = None, generator=None, latents=None, output_type: str = "pil",
                 **request):
        """Draw the person of `identity` (from encode_identity; one, or one per prompt) or of `face_image` (one photo
        or several of one person) into each prompt's scene, as `plan` says (a GenerationPlan resolved once by the
        caller), else as the request's keyword arguments say (resolved here, once — see `plan`):
        negative_prompt, num_inference_steps, guidance_scale, height, width, num_images_per_prompt; head_box=(x, y,
        w, h) on the output places the head through the method's ControlNet (posed as pose_image's face, else
        face_image's, else frontal); control_image= gives the ControlNet's image directly (one, or one per prompt);
        control_scale / control_start / control_end: its strength and guidance window."""
        import torch

        from facegen.core.prompts import as_prompts

        with torch.no_grad():
            # 1. Check inputs; resolve the request once (sampling defaults, the control image) unless it was.
            prompts = as_prompts(prompt)
            if plan is None:
                plan = self.plan(len(prompts), face_image=face_image, **request)
            elif request:
                raise TypeError(f"give plan= or the request's arguments, not both ({', '.join(request)})")
            negatives = self.check_inputs(prompts, plan.negative_prompt, plan.height, plan.width)
            # 2. The identity: given, or encoded from the photos (several photos of one person are averaged).
            if identity is None:
                if face_image is None:
                    raise BadPrompt("give face_image= (a photo) or identity= (from encode_identity)")
                identity = self.encode_identity(face_image)
            # 3. The method's conditioning: prompt embeddings carrying the person, and the negative's.
            conditioning = self.encode_conditioning(prompts, negatives, identity)
            # 4. Denoise with the base's diffusers pipeline (its ControlNet pipeline under control).
            fit_vae_to(self.vae, len(prompts) * plan.num_images, plan.height, plan.width)
            control = plan.control is not None
            if control:
                self.load_controlnet()
            denoiser = self.denoiser(control)
            denoiser.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
            kwargs = {**conditioning, **self.guidance_kwargs(plan.guidance_scale), "num_inference_steps": plan.steps,
                      "height": plan.height, "width": plan.width, "num_images_per_prompt": plan.num_images,
                      "generator": generator, "latents": latents, "output_type": output_type}
            if control:
                kwargs.update(self.base.control_kwargs(plan.control))
            out = denoiser(**self.base.prepare_call(denoiser, kwargs, control))
            return self.output_class(images=out.images)


def _first_photo(face_image):
    if face_image is None:
        return None
    return face_image[0] if isinstance(face_image, (list, tuple)) else face_image


__all__ = ["HOOKS", "Identity", "IdentityPipeline", "IdentityPipelineOutput", "OneTensorIdentity", "detect_faces"]
