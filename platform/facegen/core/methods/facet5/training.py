"""FaceT5-FLUX's training task: FLUX's flow-matching loss with the FaceT5 encoder's conditioning. LoRA adapters on the
DiT's attention and the encoder's fuser (with the face projection) train; the T5 stack, CLIP-L, the face ViT, the
DiT's base weights and the VAE stay frozen. Conditioning dropout gives the zero face with an empty prompt (the
negative of true classifier-free guidance). The objective is the FLUX family's (facegen.core.bases.flux: flow
matching). `task(batch)` returns (loss, metrics)."""
from __future__ import annotations

import os

import torch
from torch import nn

from facegen.core.methods.facet5.encoder import FaceT5FluxEncoder
from facegen.core.methods.facet5.pipeline import TRANSFORMER, FaceT5FluxPipeline, parts_an_export_brings
from facegen.core.methods.training_utils import IdentityTask, frozen, load_trained_weights, row_seeds


class FaceT5Trainable(nn.Module):
    """What trains: the encoder (its fuser and face projection) and the DiT (its LoRA adapters)."""

    def __init__(self, encoder: FaceT5FluxEncoder, transformer: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.transformer = transformer


class FaceT5Task(IdentityTask):
    def __init__(self, method, section, train, device: torch.device | str = "cpu",
                 frozen_dtype: torch.dtype = torch.float32, load_base: bool = True, clip=None):
        from peft import LoraConfig

        super().__init__(method, section, train, device, frozen_dtype, load_base, clip)
        s, t = self.section, self.section.train
        s.check_model(None)
        skip = parts_an_export_brings(s.model)
        if not load_base:
            skip += ("vae",)
        c = self.base.load(s.base_model, s.sha256, torch_dtype=torch.float32, skip=skip)
        if s.model:
            encoder = FaceT5FluxEncoder.from_pretrained(FaceT5FluxPipeline.encoder_weights(s), torch_dtype=torch.float32)
            transformer = TRANSFORMER.load(s.model, c["transformer"], torch.float32)
        else:
            encoder = FaceT5FluxEncoder.fresh(s.encoder, c["text_encoder"], c["tokenizer"], c["tokenizer_2"],
                                              c["text_encoder_2"])
            transformer = c["transformer"]
        encoder.requires_grad_(False)
        if t.train_fuser:
            encoder.encoder_2.fuser.requires_grad_(True)
            encoder.encoder_2.face_patch_proj.requires_grad_(True)
        encoder.train()
        transformer.requires_grad_(False)
        transformer.add_adapter(LoraConfig(r=t.lora_rank, lora_alpha=t.lora_rank, init_lora_weights="gaussian",
                                           target_modules=list(t.lora_targets)))
        # The DiT's base weights stay frozen, so they run in frozen_dtype (bf16 on a GPU: 12 GB of FLUX's 24 saved);
        # the adapters train in fp32.
        for p in transformer.parameters():
            p.data = p.data.to(torch.float32 if p.requires_grad else frozen_dtype)
        self.trainable = FaceT5Trainable(encoder, transformer).to(self.device)
        if load_base:
            self.vae = frozen(c["vae"], self.device, frozen_dtype)
        self.generator = torch.Generator().manual_seed(self.cfg.seed)

    @staticmethod
    def check_config(section, rows: int) -> None:
        """Before any worker starts: the section can train (a real base model needs a converted encoder)."""
        section.check_model(None)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        t, encoder, transformer = self.section.train, self.trainable.encoder, self.trainable.transformer
        prompts = [str(p) for p in batch["prompt"]]
        faces = (batch["face"].to(self.device, torch.float32) + 1) / 2  # decode_batch's [-1, 1] → ToTensor's [0, 1]
        b = len(prompts)
        if t.cond_dropout > 0:  # the zero face with an empty prompt: the negative the sampler guides against
            drop = torch.rand(b, generator=self.generator) < t.cond_dropout
            faces = torch.where(drop.to(self.device)[:, None, None, None], torch.zeros_like(faces), faces)
            prompts = ["" if d else p for d, p in zip(drop.tolist(), prompts)]
        with torch.no_grad():
            face_tokens = encoder.encoder_2.read_faces(faces)
        embeds, pooled = encoder.encode(prompts, face_tokens)

        fixed = self.cfg.fixed_noise  # each row's noise and σ from its content: the loss a function of the weights
        with torch.no_grad():
            x0 = self.base.clean_latents(self.vae, batch["target"].to(self.device), use_mean=fixed)
        loss = self.base.training_loss(transformer, x0, row_seeds(batch) if fixed else None,
                                       {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}, t.logit_mean,
                                       t.logit_std, self.section.distilled_guidance)
        return loss, {"mse": float(loss.detach())}

    def export(self, state_dict: dict, directory: str | os.PathLike) -> None:
        """The encoder as its `save_pretrained` (what --model loads), the DiT's LoRA adapters beside it
        (transformer_lora/), and the converted DiT training started from (transformer/) when there was one."""
        load_trained_weights(self.trainable, state_dict)
        self.trainable.encoder.save_pretrained(directory)
        TRANSFORMER.save(directory, self.section.model, self.trainable.transformer)
