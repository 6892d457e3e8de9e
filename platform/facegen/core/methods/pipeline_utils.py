"""What the methods' pipelines share: scheduler choice, input checks, the face stack as a pipeline component,
`FaceIdentityEncoder` — photos → a method's identity without the diffusion model (the pipeline's encode_identity
and the service's face-encoder deployment run the same code) — and how an export carries its denoising model."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegen.core.errors import BadPrompt, ConfigError
from facegen.core.face.analyzer import DetectedFace, FaceAnalyzer
from facegen.core.face.images import ImageInput, load_image


def make_scheduler(name: str, current):
    """Swap the scheduler class, keeping the model's noise schedule ("default" keeps the model's own)."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    table = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
    if name == "default":
        return current
    if name not in table:
        raise ConfigError(f"unknown scheduler '{name}' (known: default, {', '.join(table)})")
    return table[name].from_config(current.config)


# Above these, decoding the latents all at once is what runs out of GPU memory first: decode image by image (slicing)
# for batches, tile by tile (tiling) for large canvases.
VAE_SLICING_IMAGES = 2
VAE_TILING_PIXELS = 1536 * 1536


def fit_vae_to(vae, images: int, height: int, width: int) -> None:
    """Slice the VAE's decode for batches and tile it for large canvases; plain decoding otherwise (it is exact)."""
    (vae.enable_slicing if images >= VAE_SLICING_IMAGES else vae.disable_slicing)()
    (vae.enable_tiling if height * width > VAE_TILING_PIXELS else vae.disable_tiling)()


def in_dtype(module, dtype):
    """The whole module in `dtype` — FaceCLIP's encoder holds SDXL's text towers, loaded in the UNet's dtype — moved only
    when some weight differs (diffusers warns on every .to(dtype) of a ModelMixin)."""
    return module if all(p.dtype == dtype for p in module.parameters()) else module.to(dtype)


def photo_list(image) -> list:
    photos = list(image) if isinstance(image, (list, tuple)) else [image]
    if not photos:
        raise BadPrompt("no face photo given")
    return photos


def photo_name(photo, i: int) -> str:
    return str(photo) if isinstance(photo, (str, os.PathLike)) else f"photo {i + 1}"


def detect_faces(face_analyzer: FaceAnalyzer, image: ImageInput | Sequence[ImageInput]) -> list[tuple[np.ndarray, DetectedFace]]:
    """(RGB, largest face) per photo (one, or a list of one person's); NoFaceFound names the photo without one."""
    return [face_analyzer.largest(load_image(p), photo_name(p, i)) for i, p in enumerate(photo_list(image))]


def resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    """Aligned face crops (N×S×S×3 uint8) at size×size (the template scales with the crop)."""
    import cv2

    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[None]
    if faces.shape[1] == size and faces.shape[2] == size:
        return faces
    shrink = faces.shape[1] > size
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
                     for f in faces])


@dataclass(frozen=True)
class ExportedDenoiser:
    """How an export carries the denoising model it draws with (FaceCLIP's UNet, FaceT5's DiT): a full model in the
    diffusers layout (<export>/<full_dir>/ — the converted official one, or one fine-tuned in full) that replaces the
    base model's, and LoRA adapters (<export>/<lora_dir>/<lora_file>, a fine-tuning run's) on top."""

    model_class: str  # the diffusers class of the full model
    full_dir: str
    lora_dir: str
    adapter_name: str
    lora_file: str = "pytorch_lora_weights.safetensors"

    def has_full(self, model_dir: str | os.PathLike) -> bool:
        return (Path(model_dir) / self.full_dir / "config.json").is_file()

    def load(self, model_dir: str | os.PathLike, base, dtype):
        """The model the export draws with: its own full model, else `base` (the base model's; None when it was not
        loaded), with the export's adapters on top when it has any."""
        import diffusers

        d = Path(model_dir)
        model = getattr(diffusers, self.model_class).from_pretrained(d / self.full_dir, torch_dtype=dtype) \
            if self.has_full(d) else base
        if (d / self.lora_dir / self.lora_file).is_file():
            model.load_lora_adapter(str(d / self.lora_dir), weight_name=self.lora_file, prefix=None,
                                    adapter_name=self.adapter_name)
        return model

    def save(self, directory: str | os.PathLike, start: str | os.PathLike | None, model=None, full: bool = False):
        """Write a trained export's denoiser: `model` in full (`full`, when a model was trained: an alignment-stage run
        trains none), else the full model of the export training started from (when it has one: the converted official
        model) and `model`'s LoRA adapters (a peft model)."""
        import shutil

        from facegen.core.models.checkpoints import write_safetensors

        d = Path(directory)
        if full and model is not None:
            model.save_pretrained(d / self.full_dir)
            return
        if start and self.has_full(start):
            shutil.copytree(Path(start) / self.full_dir, d / self.full_dir, dirs_exist_ok=True)
        if model is not None:
            from peft.utils import get_peft_model_state_dict

            (d / self.lora_dir).mkdir(parents=True, exist_ok=True)
            write_safetensors(d / self.lora_dir / self.lora_file,
                              {k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()}, {"format": "pt"})


class FaceIdentityEncoder:
    """Photos of one person → the method's identity, with the face stack and the method's face reader alone (no
    diffusion model, no text towers): faces are aligned on the ArcFace template at `crop_size` (the reader's), and
    `condition` — each method's — turns the crops into one person's identity (several photos: the mean)."""

    uses_embeddings = False  # does `condition` read the recognizer's embeddings (computed for pre-aligned faces)?

    def __init__(self, face_analyzer: FaceAnalyzer, reader):
        self.face_analyzer, self.reader = face_analyzer, reader

    @property
    def crop_size(self) -> int:
        return self.reader.crop_size

    def encode_identity(self, image: ImageInput | Sequence[ImageInput]):
        """One photo, or several of one person (averaged)."""
        return self.from_detections(detect_faces(self.face_analyzer, image))

    def from_detections(self, detections: list[tuple[np.ndarray, DetectedFace]]):
        import torch

        from facegen.core.face.align import align_face

        with torch.no_grad():
            return self.condition(np.stack([align_face(rgb, face.kps, self.crop_size) for rgb, face in detections]),
                                  np.stack([face.embedding for _, face in detections]))

    def from_aligned(self, faces: np.ndarray):
        """Faces already aligned on the ArcFace template (N×S×S×3 uint8, any S), of one person (averaged): no
        detection — for pre-aligned datasets and the miniature world's drawings."""
        import torch

        embeddings = self.face_analyzer.embed_aligned(list(faces)) if self.uses_embeddings else None
        with torch.no_grad():
            return self.condition(resize_faces(faces, self.crop_size), embeddings)

    def condition(self, crops: np.ndarray, embeddings: np.ndarray | None):
        """Aligned crops N×crop_size×crop_size×3 (uint8) and, where the method reads them, the recognizer's
        embeddings N×512 → the identity of the one person they show."""
        raise NotImplementedError

    def to(self, device):
        self.reader.to(device)
        return self


class FaceAnalyzerComponent:
    """Pipeline mixin: the face stack is ONNX files referenced by a config, which diffusers cannot save itself;
    save_pretrained writes that config to face_analyzer/, from_pretrained reads it back."""

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

    def encode_identity(self, image):
        """One photo, or several of one person (averaged) → this method's identity."""
        if self.face_analyzer is None:
            raise ConfigError("this pipeline has no face_analyzer: pass identity= or build it with from_preset")
        return self.face_encoder.encode_identity(image)


class ControlComponent:
    """Pipeline mixin: scene switch through a ControlNet (diffusers' `ControlNetModel`), loaded on first use so a
    pipeline that never gets a control input never holds one. `control_config` is the method's
    `methods.<name>.controlnet` section (from_preset sets it)."""

    @property
    def control_config(self):
        from facegen.core.methods.base import ControlNetConfig

        return getattr(self, "_control_config", None) or ControlNetConfig()

    @control_config.setter
    def control_config(self, value) -> None:
        self._control_config = value

    controlnet_class = "ControlNetModel"  # diffusers' ControlNet class for the method's denoiser (FLUX: its own)
    control_image_argument = "image"  # what diffusers' ControlNet pipeline calls the control image (FLUX: control_image)

    def control_kwargs(self, control) -> dict:
        """A Control as diffusers' ControlNet pipeline takes it."""
        return {self.control_image_argument: control.image, "controlnet_conditioning_scale": control.scale,
                "control_guidance_start": control.start, "control_guidance_end": control.end}

    @property
    def denoising_model(self):
        """The network the ControlNet steers (the UNet; FLUX's transformer): the ControlNet takes its dtype and device."""
        return self.unet

    def load_controlnet(self):
        if getattr(self, "controlnet", None) is None:
            import diffusers

            from facegen.core.errors import ModelNotFound
            from facegen.core.weights import resolve_model

            c = self.control_config
            if not c.model:
                raise ConfigError("no ControlNet is configured for this method, so head_box / control_image cannot be "
                                  "used: set methods.<method>.controlnet.model (a hub id or a local directory)")
            model = self.denoising_model
            try:
                net = getattr(diffusers, self.controlnet_class).from_pretrained(str(resolve_model(c.model, c.sha256)),
                                                                               torch_dtype=model.dtype)
            except (OSError, ValueError) as e:
                raise ModelNotFound(f"{c.model} is not a {self.controlnet_class} in the diffusers layout: {e}") from None
            self.register_modules(controlnet=net.to(model.device))
        return self.controlnet

    def prepare_control(self, width: int, height: int, n: int, head_box=None, pose_image=None, face_image=None,
                        control_image=None, control_scale: float | None = None, control_start: float | None = None,
                        control_end: float | None = None):
        """The request's Control (a control image per prompt, at the canvas size), or None without control inputs
        (the rules: `facegen.core.control.resolve`). head_box: the keypoint map of the pose photo's face (else the
        reference photo's, else a frontal face) placed in the box; control_image: one image, or one per prompt."""
        from facegen.core.control import Control, head_control_image, resize_note, resolve

        plan = resolve(self.control_config, width, height, head_box, pose_image, control_image, control_scale,
                       control_start, control_end)
        if plan is None:
            return None
        if plan.head_box is not None:
            source = pose_image if pose_image is not None else _first_photo(face_image)
            face = None
            if source is not None:
                _, detected = self.face_analyzer.largest(source, "the pose photo" if pose_image is not None else
                                                         "the face photo")
                face = (detected.kps, detected.bbox)
            images = [head_control_image(width, height, plan.head_box, face, self.control_config.render)] * n
        else:
            import PIL.Image

            given = list(control_image) if isinstance(control_image, (list, tuple)) else [control_image] * n
            if len(given) != n:
                raise BadPrompt(f"{len(given)} control images for {n} prompts")
            images = [resize_note(PIL.Image.fromarray(load_image(img)), width, height) for img in given]
        self.load_controlnet()
        return Control(image=images, scale=plan.scale, start=plan.start, end=plan.end)


def _first_photo(face_image):
    if face_image is None:
        return None
    return face_image[0] if isinstance(face_image, (list, tuple)) else face_image




def assemble(cls, section, device, face_analyzer: FaceAnalyzer | None, face_config, **components):
    """A method's pipeline from its loaded components and its preset section: the sampling defaults registered in
    its config, the face stack (`face_analyzer`, else one built from `face_config`), the ControlNet setting, placed
    on `device` — the end every `from_preset` shares."""
    s = section.sampling
    pipe = cls(**components, face_analyzer=face_analyzer or FaceAnalyzer(face_config),
               num_inference_steps=s.steps, guidance_scale=s.guidance_scale, height=s.height, width=s.width,
               negative_prompt=s.negative_prompt)
    pipe.control_config = section.controlnet
    return place_pipeline(pipe, device, section.memory)


def place_pipeline(pipe, device, memory: str):
    """The pipeline on `device`, or offloaded to the CPU between uses as `memory` (methods.<name>.memory) says:
    offloading is for a CUDA device only (on the CPU there is nothing to save)."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if memory == "none" or device.type != "cuda":
        return pipe.to(device)
    if memory == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    return pipe


class MethodPipeline:
    """Pipeline mixin: what ties a pipeline to its method (`method_name`, its registry entry). Its input check is the
    registry entry's, and it is built from its own preset section (`methods.<method_name>`) and the face stack's
    config, never the whole Preset — `from_section` and `face_reader`, which each method writes; `from_preset` /
    `load_face_encoder` only pick the two out of a preset (name, file or Preset)."""

    method_name = ""
    encoder_label = ""  # what a pin mismatch calls the method's trained encoder ("the trained FaceCLIP encoder")
    face_encoder_class: type[FaceIdentityEncoder] = FaceIdentityEncoder
    encoder_component = ""  # the component holding the method's encoder; its face_reader() is the face side alone

    @classmethod
    def encoder_weights(cls, section, model: str | os.PathLike | None = None) -> str | os.PathLike | None:
        """The trained encoder to load — `model`, else the section's — once the section accepts it (`check_model`)
        and its sha256 pin holds; None: the method's fresh encoder."""
        from facegen.core.pins import verify_sha256

        weights = model or section.model
        section.check_model(weights)
        if weights:
            verify_sha256(weights, section.model_sha256, cls.encoder_label)
        return weights

    @classmethod
    def face_reader(cls, section, weights):
        """The encoder's face side alone (what `face_encoder_class` reads faces with) from `weights`, or a fresh one."""
        raise NotImplementedError

    @classmethod
    def face_encoder_from_section(cls, section, face_config, model: str | os.PathLike | None = None, device=None):
        """The face stack and the encoder's face side alone (photos → identity): no diffusion model, no text towers."""
        from facegen.core import devices

        reader = cls.face_reader(section, cls.encoder_weights(section, model))
        return cls.face_encoder_class(FaceAnalyzer(face_config), reader).to(devices.resolve(section.dtype, device).device)

    @property
    def face_encoder(self) -> FaceIdentityEncoder:
        """This pipeline's face stack and its loaded encoder's face side: photos → identity."""
        return self.face_encoder_class(self.face_analyzer, getattr(self, self.encoder_component).face_reader())

    @classmethod
    def check_inputs(cls, prompt, negative_prompt="", height: int | None = None, width: int | None = None) -> list[str]:
        """The method's input check (`Method.check_inputs`, torch-free: the CLI and the ingress run the same one):
        sizes, S* where the method needs it, one negative prompt per prompt (returned)."""
        from facegen.core.methods import get_method

        return get_method(cls.method_name).check_inputs(prompt, negative_prompt, height, width)

    @classmethod
    def from_preset(cls, preset="tiny", overrides: Sequence[str] = (), model=None, torch_dtype=None, device=None,
                    face_analyzer: FaceAnalyzer | None = None):
        """The pipeline as the preset's `methods.<name>` section configures it: `model` = a trained or converted
        export replacing the section's; dtype/device as `facegen.core.devices.resolve` decides unless given;
        `face_analyzer` = one already built from the preset's `face` section (the CLI's, which checked the photos)."""
        from facegen.core.config import as_preset

        p = as_preset(preset, overrides)
        return cls.from_section(p.method(cls.method_name), p.face, model=model, torch_dtype=torch_dtype, device=device,
                                face_analyzer=face_analyzer)

    @classmethod
    def load_face_encoder(cls, preset="tiny", model=None, device=None):
        """The face stack and the encoder's face side alone (photos → identity), for a replica that only encodes
        faces: no diffusion model, no text encoders."""
        from facegen.core.config import as_preset

        p = as_preset(preset)
        return cls.face_encoder_from_section(p.method(cls.method_name), p.face, model=model, device=device)


class OneTensorIdentity:
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


class IdentityDiffusionCall:
    """Pipeline mixin: the `__call__` every method shares, in diffusers' numbered steps. A method supplies
    `encode_conditioning(prompts, negatives, identity)` (its prompt embeddings, as diffusers' pipelines take them),
    `denoiser(control)` (the diffusers pipeline that draws with them), `check_inputs` and `output_class`
    (identity_pipeline.IdentityPipeline gives the last two)."""

    output_class = None

    def check_prompt_tokens(self, prompt: str | list[str]) -> None:
        """Refuse a prompt whose tokens this method cannot condition on (the service checks each request alone,
        before it shares a batch). Nothing to refuse by default: the face needs no slot in the prompt, or its slot is
        in a prefix within the tokenizer's length (a long prompt is truncated after it); DreamIdentity overrides."""
        from facegen.core.prompts import as_prompts

        as_prompts(prompt)

    def guidance_kwargs(self, guidance_scale: float) -> dict:
        """The preset's guidance scale as the denoiser takes it (classifier-free guidance, diffusers' name)."""
        return {"guidance_scale": guidance_scale}

    @property
    def sampling(self):
        """The pipeline's sampling defaults (its preset section's, registered in its config) as a SamplingConfig."""
        from facegen.core.methods.base import SamplingConfig

        c = self.config
        return SamplingConfig(steps=c.num_inference_steps, guidance_scale=c.guidance_scale, width=c.width,
                              height=c.height, negative_prompt=c.negative_prompt)

    def __call__(self, prompt, identity=None, face_image: ImageInput | Sequence[ImageInput] | None = None,
                 negative_prompt: str | list[str] | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
                 num_images_per_prompt: int = 1, generator=None, latents=None, output_type: str = "pil",
                 head_box=None, pose_image: ImageInput | None = None, control_image=None,
                 control_scale: float | None = None, control_start: float | None = None,
                 control_end: float | None = None, **kwargs):
        """Draw the person of `identity` (from encode_identity; one, or one per prompt) or of `face_image` (one photo
        or several of one person) into each prompt's scene. Sampling values left None are the preset's.
        head_box=(x, y, w, h) on the output places the head (posed as pose_image's face, else face_image's, else
        frontal) through the method's ControlNet; control_image= gives the ControlNet's image directly (one, or one
        per prompt); control_scale / control_start / control_end: its strength and guidance window."""
        import torch

        from facegen.core.methods.base import check_sampling
        from facegen.core.prompts import as_prompts

        with torch.no_grad():
            # 1. Check inputs, fill in the sampling defaults, and make the control image (if any).
            prompts = as_prompts(prompt)
            s = self.sampling.resolve(num_inference_steps, guidance_scale, width, height, negative_prompt)
            check_sampling(num_images=num_images_per_prompt)
            negatives = self.check_inputs(prompts, s.negative_prompt, s.height, s.width)
            control = self.prepare_control(s.width, s.height, len(prompts), head_box, pose_image, face_image,
                                           control_image, control_scale, control_start, control_end)
            # 2. The identity: given, or encoded from the photos (several photos of one person are averaged).
            if identity is None:
                if face_image is None:
                    raise BadPrompt("give face_image= (a photo) or identity= (from encode_identity)")
                identity = self.encode_identity(face_image)
            # 3. The method's conditioning: prompt embeddings carrying the person, and the negative's.
            conditioning = self.encode_conditioning(prompts, negatives, identity)
            # 4. Denoise with diffusers' own pipeline (its ControlNet pipeline under control), given the embeddings.
            fit_vae_to(self.vae, len(prompts) * num_images_per_prompt, s.height, s.width)
            denoiser = self.denoiser(control is not None)
            if control is not None:
                kwargs.update(self.control_kwargs(control))
            denoiser.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
            out = denoiser(**conditioning, **self.guidance_kwargs(s.guidance_scale), num_inference_steps=s.steps,
                           height=s.height, width=s.width, num_images_per_prompt=num_images_per_prompt,
                           generator=generator, latents=latents, output_type=output_type, **kwargs)
            return self.output_class(images=out.images)
