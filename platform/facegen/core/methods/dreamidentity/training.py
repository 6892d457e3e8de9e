"""DreamIdentity's training task, on whichever Stable Diffusion base its registry entry names: the base's denoising
objective through its frozen UNet with S* filled by the M² encoder in every text tower, + λ·Σ‖s_i‖ (the paper's
editability regulariser). `task(batch)` returns (loss, metrics)."""
from __future__ import annotations

import os

import torch

from facegen.core.methods.dreamidentity.pipeline import DreamIdentityPipeline, load_m2_encoder
from facegen.core.methods.training_utils import (
    IdentityTask,
    frozen,
    load_trained_weights,
    row_seeds,
    target_latents,
    train_scheduler,
)


class DreamIdentityTask(IdentityTask):
    def __init__(self, method, section, train, device: torch.device | str = "cpu",
                 frozen_dtype: torch.dtype = torch.float32, load_base: bool = True, clip=None):
        super().__init__(method, section, train, device, frozen_dtype, load_base, clip)
        s, base = section, self.base
        parts = base.load(s.base_model, s.sha256) if load_base else None
        token_dim = sum(base.token_dims_of(parts) if parts else base.token_dims(s.base_model, s.sha256))
        self.trainable = load_m2_encoder(s, DreamIdentityPipeline.encoder_weights(s), token_dim).to(self.device).train()
        self.trainable.vit.requires_grad_(s.train.train_vit)
        if parts is not None:
            for name in base.config.components:
                if isinstance(parts[name], torch.nn.Module):
                    parts[name] = frozen(parts[name], self.device, frozen_dtype)
            self.vae, self.unet = parts["vae"], parts["unet"]
            self.text_encoders = torch.nn.ModuleList(parts[e] for _, e in base.config.text_towers)
            self.scheduler = train_scheduler(parts["scheduler"])
            self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
            # Only its prompt encoding is used: it fills S* in the frozen text towers' input.
            self.prompt_encoder = DreamIdentityPipeline(**{**parts, "scheduler": self.scheduler}, m2_encoder=self.trainable,
                                                        method=method.name)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        s = self.trainable(batch["face"].to(self.device))  # B×k×D id_tokens
        conditioning = self.prompt_encoder.encode_prompt_with_identity(list(batch["prompt"]), s,
                                                                       require_placeholder=False)
        latents = target_latents(self.vae, batch, self.device, self.unet.dtype, self.cfg.fixed_noise)
        mse = self.base.training_loss(self.unet, self.scheduler, latents,
                                      row_seeds(batch) if self.cfg.fixed_noise else None, conditioning,
                                      self.vae_scale_factor)
        reg = self.trainable.regularization_loss(s.float())
        return mse + self.section.train.reg_weight * reg, {"mse": float(mse), "reg": float(reg)}

    def export(self, state_dict: dict, directory: str | os.PathLike) -> None:
        load_trained_weights(self.trainable, state_dict)
        self.trainable.save_pretrained(directory)
