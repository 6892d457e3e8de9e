"""FaceCLIP's training task. Stage `align`: the multi-modal alignment loss (face, text, image). Stage `diffusion`:
SDXL's diffusion loss with the encoder's conditioning + align_weight · alignment loss, the UNet frozen, LoRA or
fully trained. Conditioning dropout drops face and prompt together (the unconditional branch of CFG).
`task(batch)` returns (loss, metrics)."""
from __future__ import annotations

import os

import torch
from torch import nn

from facegen.core.errors import ConfigError
from facegen.core.methods.faceclip.config import FaceCLIPTrainConfig
from facegen.core.methods.faceclip.encoder import FaceCLIPEncoder, architecture_of, load_encoder
from facegen.core.methods.faceclip.pipeline import UNET, FaceCLIPSDXLPipeline
from facegen.core.methods.training_utils import (
    IdentityTask,
    frozen,
    load_trained_weights,
    row_seeds,
    target_latents,
    train_scheduler,
)


class FaceCLIPTrainable(nn.Module):
    """What trains: the FaceCLIP encoder, plus the SDXL UNet when it is trained (LoRA adapters or fully)."""

    def __init__(self, encoder: nn.Module, unet: nn.Module | None):
        super().__init__()
        self.encoder = encoder
        self.unet = unet


def check_train_config(t: FaceCLIPTrainConfig) -> None:
    if t.stage not in t.STAGES:
        raise ConfigError(f"methods.faceclip.train.stage '{t.stage}': use one of {', '.join(t.STAGES)}")
    if t.unet not in t.UNET_MODES:
        raise ConfigError(f"methods.faceclip.train.unet '{t.unet}': use one of {', '.join(t.UNET_MODES)}")


def architecture(section) -> str:
    """The encoder a run trains: the model it starts from decides (an export knows its class), else the preset."""
    return architecture_of(section.model) if section.model else section.encoder.architecture


def check_official_training(section) -> None:
    """ByteDance's architecture fine-tunes with the diffusion loss only: its alignment heads are not published."""
    t = section.train
    if architecture(section) != "official":
        return
    section.check_model(None)
    if t.stage != "diffusion" or t.align_weight:
        raise ConfigError("fine-tuning the official FaceCLIP encoder: set methods.faceclip.train.stage=diffusion and "
                          "methods.faceclip.train.align_weight=0 (its alignment-loss heads are not published)")


class FaceCLIPTask(IdentityTask):
    def __init__(self, method, section, train, device: torch.device | str = "cpu",
                 frozen_dtype: torch.dtype = torch.float32, load_base: bool = True, clip=None):
        super().__init__(method, section, train, device, frozen_dtype, load_base, clip)
        s, t = self.section, self.section.train
        check_train_config(t)
        check_official_training(s)
        self.diffusion = t.stage == "diffusion"
        self.aligns = architecture(s) == "facegen"  # the alignment loss (and its CLIP targets) needs our heads
        # Only what this stage runs: the alignment stage (and an export of a frozen-UNet run) never needs the UNet
        # or the VAE — 10 GB of SDXL weights per worker that would sit unused.
        needs_unet = self.diffusion and (load_base or t.unet != "frozen")
        skip = () if needs_unet else ("unet", "vae")
        # An export brings its own text towers, and its UNet when it was trained with one (the converted official
        # model's fine-tuned SDXL UNet): fine-tuning continues from that, not from the base model's.
        trained_unet = bool(s.model) and UNET.has_full(s.model)
        if s.model:
            skip += ("text_encoder", "text_encoder_2") + (("unet",) if trained_unet else ())
        # fp32 whatever the checkpoint's dtype on disk: the text towers inside the encoder and a LoRA / full UNet are
        # trained (fp32 master weights); the frozen VAE and UNet are cast to frozen_dtype below.
        c = self.base.load(s.base_model, s.sha256, torch_dtype=torch.float32, skip=skip)
        encoder = (load_encoder(FaceCLIPSDXLPipeline.encoder_weights(s)) if s.model else
                   FaceCLIPEncoder.from_sdxl(s.encoder, c["text_encoder"], c["text_encoder_2"], c["tokenizer"],
                                             c["tokenizer_2"]))
        encoder.set_trainable(t.train_text, t.train_vit).train()
        if trained_unet and needs_unet:
            c["unet"] = UNET.load(s.model, None, torch.float32)
        unet = None
        if self.diffusion and t.unet == "full":
            unet = c["unet"].train().requires_grad_(True)
        elif self.diffusion and t.unet == "lora":
            from peft import LoraConfig

            unet = c["unet"].requires_grad_(False)
            unet.add_adapter(LoraConfig(r=t.lora_rank, lora_alpha=t.lora_rank, init_lora_weights="gaussian",
                                        target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
            # The base weights stay frozen, so they run in frozen_dtype (bf16 on a GPU: 5 GB of SDXL's 10 GB saved);
            # only the adapters train, in fp32. peft casts activations between the two.
            for p in unet.parameters():
                p.data = p.data.to(torch.float32 if p.requires_grad else frozen_dtype)
        self.trainable = FaceCLIPTrainable(encoder, unet).to(self.device)
        if load_base and self.aligns:
            from facegen.core.models.clip_scorer import ClipScorer

            self.clip = ClipScorer(clip).to(self.device)
        if load_base and self.diffusion:
            self.vae = frozen(c["vae"], self.device, frozen_dtype)
            if unet is None:
                self.frozen_unet = frozen(c["unet"], self.device, frozen_dtype)
            self.scheduler = train_scheduler(c["scheduler"])
        self.generator = torch.Generator().manual_seed(self.cfg.seed)

    @property
    def unet(self):
        return self.trainable.unet if self.trainable.unet is not None else self.frozen_unet

    @staticmethod
    def check_config(section, rows: int) -> None:
        """Before any worker starts: a valid train section; the alignment loss needs 2 rows to contrast."""
        t = section.train
        check_train_config(t)
        check_official_training(section)
        if t.stage == "align" and rows < 2:
            raise ConfigError("the alignment loss contrasts rows within a batch: the dataset needs at least 2 rows")

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        import PIL.Image

        t = self.section.train
        encoder = self.trainable.encoder
        prompts = [str(p) for p in batch["prompt"]]
        faces = batch["face"].to(self.device)
        face_embedding = batch["face_embedding"].to(self.device)
        keep = torch.ones(len(prompts), dtype=torch.bool)
        if t.cond_dropout > 0:  # drop (face, prompt) together: the unconditional branch of CFG
            keep = ~(torch.rand(len(prompts), generator=self.generator) < t.cond_dropout)
        embeds, pooled = encoder.encode_batch(prompts, faces, face_embedding, keep)
        align, parts = torch.zeros((), device=self.device), {}
        if self.aligns:
            with torch.no_grad():  # the alignment targets: the target image and the plain prompt
                targets = ((batch["target"].clamp(-1, 1) + 1) * 127.5).byte().permute(0, 2, 3, 1).cpu().numpy()
                image_embeds = self.clip.embed_images([PIL.Image.fromarray(x) for x in targets]).to(self.device)
                text_embeds = encoder.plain_text_embeds([self.clip.reading(str(p)) for p in batch["prompt"]])
            align, parts = encoder.alignment_loss(pooled, face_embedding, text_embeds, image_embeds,
                                                  (t.face_weight, t.text_weight, t.image_weight))
            parts["align"] = float(align)
        if not self.diffusion:
            return align, parts
        unet = self.unet
        latents = target_latents(self.vae, batch, self.device, self.vae.dtype, self.cfg.fixed_noise)
        mse = self.base.training_loss(unet, self.scheduler, latents, row_seeds(batch) if self.cfg.fixed_noise else None,
                                      {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled},
                                      2 ** (len(self.vae.config.block_out_channels) - 1))
        return mse + t.align_weight * align, {"mse": float(mse), **parts}

    def export(self, state_dict: dict, directory: str | os.PathLike) -> None:
        """The encoder as its class's `save_pretrained`; the UNet it draws with beside it: a trained one (LoRA
        adapters or a full UNet), and the full UNet of the export training started from (the converted official
        model's) when that one was not itself trained in full."""
        load_trained_weights(self.trainable, state_dict)
        self.trainable.encoder.save_pretrained(directory)
        unet, mode = self.trainable.unet, self.section.train.unet
        UNET.save(directory, self.section.model, unet if mode in ("lora", "full") else None, full=mode == "full")
