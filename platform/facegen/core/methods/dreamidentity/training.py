"""DreamIdentity's training task: diffusion MSE through the frozen SD2.1 with S* filled by the M² encoder,
+ λ·Σ‖s_i‖ (the paper's editability regulariser). `task(batch)` returns (loss, metrics)."""
from __future__ import annotations

import os

import torch
from torch import nn

from facegen.core.methods.dreamidentity.pipeline import METHOD_NAME, DreamIdentityPipeline, load_m2_encoder
from facegen.core.methods.training_utils import (
    diffusion_loss,
    frozen,
    load_trained_weights,
    row_seeds,
    target_latents,
    train_scheduler,
)


class DreamIdentityTask(nn.Module):
    def __init__(self, preset, device: torch.device | str = "cpu", frozen_dtype: torch.dtype = torch.float32,
                 load_base: bool = True):
        from facegen.core.weights import load_sd21_components, text_token_dim

        super().__init__()
        self.section, self.cfg, self.device = preset.method(METHOD_NAME), preset.train, torch.device(device)
        s = self.section
        parts = load_sd21_components(s.base_model, s.sha256) if load_base else None
        token_dim = (parts["text_encoder"].get_input_embeddings().embedding_dim if parts
                     else text_token_dim(s.base_model, s.sha256))
        self.trainable = load_m2_encoder(s, DreamIdentityPipeline.encoder_weights(s), token_dim).to(self.device).train()
        self.trainable.vit.requires_grad_(s.train.train_vit)
        if parts is not None:
            self.vae = frozen(parts["vae"], self.device, frozen_dtype)
            self.unet = frozen(parts["unet"], self.device, frozen_dtype)
            self.text_encoder = frozen(parts["text_encoder"], self.device, frozen_dtype)
            self.scheduler = train_scheduler(parts["scheduler"])
            # Only its prompt encoding is used: it fills S* in the frozen text encoder's input.
            self.prompt_encoder = DreamIdentityPipeline(vae=self.vae, text_encoder=self.text_encoder,
                                                        tokenizer=parts["tokenizer"], unet=self.unet,
                                                        scheduler=self.scheduler, m2_encoder=self.trainable)

    @staticmethod
    def check_config(preset, rows: int) -> None:
        """Before any worker starts: nothing DreamIdentity-specific to refuse."""

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        s = self.trainable(batch["face"].to(self.device))  # B×k×D id_tokens
        embeds = self.prompt_encoder.encode_prompt_with_identity(list(batch["prompt"]), s.to(self.text_encoder.dtype),
                                                                 require_placeholder=False)
        latents = target_latents(self.vae, batch, self.device, self.unet.dtype, self.cfg.fixed_noise)
        mse = diffusion_loss(self.unet, self.scheduler, latents, row_seeds(batch) if self.cfg.fixed_noise else None,
                             encoder_hidden_states=embeds)
        reg = self.trainable.regularization_loss(s.float())
        return mse + self.section.train.reg_weight * reg, {"mse": float(mse), "reg": float(reg)}

    def export(self, state_dict: dict, directory: str | os.PathLike) -> None:
        load_trained_weights(self.trainable, state_dict)
        self.trainable.save_pretrained(directory)
