"""What is trained, and its loss: one class per method, used by the Ray Train worker loop and by the driver's export.

A task holds the frozen parts (VAE, UNet, text encoders; bf16 on GPU) outside `trainable`, the module that goes into
DDP or the DeepSpeed engine. `loss(model, batch)` takes the wrapped module so gradients flow through the wrapper.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from facegen.config import Preset


def _noise_target(scheduler, latents, noise, timesteps):
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def row_seeds(batch: dict) -> list[int]:
    """One seed per row from its content, so a row gets the same noise whichever worker and batch it lands in."""
    from facegen.data.schema import stable_seed

    return [stable_seed(p, round(float(f.double().sum()), 3)) for p, f in zip(batch["prompt"], batch["face"])]


def diffusion_loss(unet, scheduler, latents, seeds: list[int] | None = None, **unet_kwargs) -> torch.Tensor:
    """The denoising objective: noise a clean latent at a random timestep, predict the noise (or v), MSE.
    `seeds` (one per row) fixes each row's noise and timestep: the overfitting diagnostic (train.fixed_noise)."""
    b, n = latents.shape[0], scheduler.config.num_train_timesteps
    if seeds is None:
        noise = torch.randn(latents.shape, dtype=torch.float32)
        t = torch.randint(0, n, (b,))
    else:
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in gens])
        t = torch.cat([torch.randint(0, n, (1,), generator=g) for g in gens])
    noise, t = noise.to(latents.device, latents.dtype), t.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy.to(unet.dtype), t, **unet_kwargs).sample
    return F.mse_loss(pred.float(), _noise_target(scheduler, latents, noise, t).float())


def target_latents(vae, batch: dict, device, dtype, use_mean: bool) -> torch.Tensor:
    """The batch's cached latents, or the frozen VAE's latents of its target images (the mean when the noise is
    fixed, so an overfitting run sees one fixed target)."""
    if "latents" in batch:
        return batch["latents"].to(device, dtype)
    with torch.no_grad():
        dist = vae.encode(batch["target"].to(device, vae.dtype)).latent_dist
        return (dist.mean if use_mean else dist.sample()) * vae.config.scaling_factor


def _frozen(module: nn.Module, device, dtype) -> nn.Module:
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _train_scheduler(scheduler):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config)


class M2Task:
    """DreamIdentity: diffusion MSE through the frozen SD2.1 with S* filled by M², + λ·Σ‖s_i‖."""

    method = "dreamidentity"
    needs_identity = False

    def __init__(self, preset: Preset, device: torch.device | str = "cpu", frozen_dtype: torch.dtype = torch.float32,
                 load_base: bool = True):
        from facegen.models.m2 import M2Encoder

        self.preset, self.device = preset, torch.device(device)
        c = preset.m2
        self.trainable = M2Encoder.from_pretrained(c.weights) if c.weights else M2Encoder.from_config_random(c)
        self.trainable.train()
        self.trainable.vit.requires_grad_(c.train_vit)
        if load_base:
            from facegen.pipelines.dreamidentity import DreamIdentityPipeline
            from facegen.weights import load_sd21_components

            parts = load_sd21_components(preset.sd21, preset.sha256)
            self.vae = _frozen(parts["vae"], self.device, frozen_dtype)
            self.unet = _frozen(parts["unet"], self.device, frozen_dtype)
            text_encoder = _frozen(parts["text_encoder"], self.device, frozen_dtype)
            self.scheduler = _train_scheduler(parts["scheduler"])
            # Only its prompt encoding is used; the M² module it holds is swapped for the one being trained.
            self.pipe = DreamIdentityPipeline(vae=self.vae, text_encoder=text_encoder, tokenizer=parts["tokenizer"],
                                              unet=self.unet, scheduler=self.scheduler, m2_encoder=self.trainable)

    def latents(self, batch) -> torch.Tensor:
        return target_latents(self.vae, batch, self.device, self.unet.dtype, self.preset.train.fixed_noise)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        s = model(batch["face"].to(self.device))  # B×k×D
        embeds = self.pipe.encode_prompt_with_identity(list(batch["prompt"]), s.to(self.pipe.text_encoder.dtype),
                                                       require_placeholder=False)
        mse = diffusion_loss(self.unet, self.scheduler, self.latents(batch),
                             row_seeds(batch) if self.preset.train.fixed_noise else None,
                             encoder_hidden_states=embeds)
        reg = self.trainable.regularization_loss(s.float())
        return mse + self.preset.m2.reg_weight * reg, {"mse": float(mse), "reg": float(reg)}

    def export(self, state_dict: dict, directory: str | os.PathLike) -> None:
        self.trainable.load_state_dict(state_dict)
        self.trainable.save_pretrained(directory)


class FaceCLIPTrainable(nn.Module):
    """The FaceCLIP encoder, plus the SDXL UNet when it is trained (LoRA adapters or fully)."""

    def __init__(self, encoder: nn.Module, unet: nn.Module | None):
        super().__init__()
        self.encoder = encoder
        self.unet = unet

    def forward(self, prompts, identity, faces, targets: tuple | None = None, denoise=None):
        """(prompt_embeds, pooled) and, given (identity, text, image) targets, the alignment loss and (given
        `denoise(unet, embeds, pooled)`) the diffusion loss — all inside forward, because DDP only syncs gradients
        of parameters used in forward (a trained UNet's included)."""
        embeds, pooled = self.encoder(prompts, identity, self.encoder.encode_faces(faces))
        if targets is None:
            return embeds, pooled
        align, parts = self.encoder.alignment_loss(pooled, *targets)
        mse = denoise(self.unet, embeds, pooled) if denoise is not None else None
        return embeds, pooled, align, parts, mse


class FaceCLIPTask:
    """FaceCLIP: stage `align` = the multi-modal alignment loss; stage `diffusion` = SDXL's diffusion loss with the
    encoder's conditioning + align_weight · alignment loss. Conditioning dropout: zero face + empty prompt."""

    method = "faceclip"
    needs_identity = True

    def __init__(self, preset: Preset, device: torch.device | str = "cpu", frozen_dtype: torch.dtype = torch.float32,
                 load_base: bool = True):
        from facegen.models.clip_scorer import ClipScorer
        from facegen.models.faceclip import FaceCLIPEncoder
        from facegen.weights import load_sdxl_components

        self.preset, self.cfg, self.device = preset, preset.train, torch.device(device)
        c = load_sdxl_components(preset.sdxl, preset.sha256)
        enc_cfg = preset.faceclip_encoder
        if enc_cfg.weights:
            encoder = FaceCLIPEncoder.from_pretrained(enc_cfg.weights)
        else:
            encoder = FaceCLIPEncoder.from_sdxl(enc_cfg, c["text_encoder"], c["text_encoder_2"], c["tokenizer"],
                                                c["tokenizer_2"])
        encoder.set_trainable().train()
        unet = None
        self.diffusion = self.cfg.stage == "diffusion"
        if self.diffusion and self.cfg.unet == "full":
            unet = c["unet"].train().requires_grad_(True)
        elif self.diffusion and self.cfg.unet == "lora":
            from peft import LoraConfig

            unet = c["unet"].requires_grad_(False)
            unet.add_adapter(LoraConfig(r=self.cfg.lora_rank, lora_alpha=self.cfg.lora_rank, init_lora_weights="gaussian",
                                        target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        self.trainable = FaceCLIPTrainable(encoder, unet)
        if load_base:
            self.clip = ClipScorer(preset.clip).to(self.device)
            self.vae = _frozen(c["vae"], self.device, frozen_dtype)
            self.unet = unet if unet is not None else _frozen(c["unet"], self.device, frozen_dtype)
            self.scheduler = _train_scheduler(c["scheduler"])
        self.generator = torch.Generator().manual_seed(self.cfg.seed)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        import PIL.Image

        prompts = [str(p) for p in batch["prompt"]]
        faces = batch["face"].to(self.device)
        identity = batch["identity"].to(self.device)
        if self.cfg.cond_dropout > 0:  # drop (face, prompt) together: the unconditional branch of CFG
            drop = torch.rand(len(prompts), generator=self.generator) < self.cfg.cond_dropout
            prompts = ["" if d else p for p, d in zip(prompts, drop)]
            keep = (~drop).to(self.device).float()
            faces, identity = faces * keep[:, None, None, None], identity * keep[:, None]
        enc = self.trainable.encoder
        with torch.no_grad():
            targets = ((batch["target"].clamp(-1, 1) + 1) * 127.5).byte().permute(0, 2, 3, 1).numpy()
            image_embeds = self.clip.embed_images([PIL.Image.fromarray(t) for t in targets]).to(self.device)
            text_embeds = enc.plain_text_embeds([str(p).replace("S*", "a person") for p in batch["prompt"]])
        denoise = None
        if self.diffusion:
            latents = self.latents(batch)
            seeds = row_seeds(batch) if self.cfg.fixed_noise else None

            def denoise(trained_unet, embeds, pooled):
                unet = trained_unet if trained_unet is not None else self.unet  # frozen: outside the model
                r = latents.shape[-1] * 8
                time_ids = torch.tensor([[r, r, 0, 0, r, r]], device=self.device, dtype=pooled.dtype).expand(len(prompts), -1)
                return diffusion_loss(unet, self.scheduler, latents, seeds, encoder_hidden_states=embeds.to(unet.dtype),
                                      added_cond_kwargs={"text_embeds": pooled.to(unet.dtype), "time_ids": time_ids})

        _, _, align, parts, mse = model(prompts, identity, faces,
                                        (batch["identity"].to(self.device), text_embeds, image_embeds), denoise)
        if mse is None:
            return align, {"align": float(align), **parts}
        return mse + self.cfg.align_weight * align, {"mse": float(mse), "align": float(align), **parts}

    def latents(self, batch) -> torch.Tensor:
        return target_latents(self.vae, batch, self.device, self.vae.dtype, self.cfg.fixed_noise)

    def export(self, state_dict: dict, directory: str | os.PathLike) -> None:
        """The encoder as `FaceCLIPEncoder.save_pretrained`; a trained UNet (LoRA or full) beside it in unet/."""
        self.trainable.load_state_dict(state_dict)
        self.trainable.encoder.save_pretrained(directory)
        unet = self.trainable.unet
        if unet is not None and self.cfg.unet == "lora":
            from peft.utils import get_peft_model_state_dict
            from safetensors.torch import save_file

            from facegen.pipelines.faceclip_sdxl import LORA_DIR, LORA_FILE

            os.makedirs(os.path.join(directory, LORA_DIR), exist_ok=True)
            save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()},
                      os.path.join(directory, LORA_DIR, LORA_FILE))
        elif unet is not None:
            unet.save_pretrained(os.path.join(directory, "unet"))


TASKS = {"dreamidentity": M2Task, "faceclip": FaceCLIPTask}
