"""SDXL: two text towers (CLIP-L, OpenCLIP-bigG), their penultimate hidden states side by side and bigG's pooled
embedding; a UNet on ε-prediction that also takes the image's size and crop (time_ids)."""
from __future__ import annotations

import torch

from facegen.core.bases.text_towers import TextTowerFamily


class SDXLFamily(TextTowerFamily):
    def load_kwargs(self) -> dict:
        return {"add_watermarker": False}

    def denoiser_kwargs(self) -> dict:
        return {"add_watermarker": False}

    def encode_prompt(self, parts, prompts, values=None, num_tokens=0, require_placeholder=False) -> dict:
        """prompt_embeds B×77×(D1+D2): both towers' penultimate hidden states; pooled_prompt_embeds: bigG's
        projected pooled output — as StableDiffusionXLPipeline.encode_prompt (clip_skip None)."""
        out_l, out_g = self.tower_outputs(parts, prompts, values, num_tokens, require_placeholder)
        return {"prompt_embeds": torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], dim=-1),
                "pooled_prompt_embeds": out_g.text_embeds}

    def encode_negative(self, parts, prompts, values=None, num_tokens=0) -> dict:
        """As SDXL's pipeline does for a negative prompt not given (force_zeros_for_empty_prompt): an empty one is
        zeros; the others are encoded."""
        out = super().encode_negative(parts, prompts, values, num_tokens)
        empty = torch.tensor([not p for p in prompts], device=out["negative_prompt_embeds"].device)
        return {k: torch.where(empty.view(-1, *([1] * (v.dim() - 1))), torch.zeros_like(v), v) for k, v in out.items()}

    def unet_kwargs(self, conditioning, latents, vae_scale_factor) -> dict:
        """SDXL's UNet also takes the pooled embedding and the size condition in pixels, as its pipeline gives them
        at inference: original size = target size = the latent canvas × the VAE's scale, no crop."""
        h, w = (side * vae_scale_factor for side in latents.shape[-2:])
        pooled = conditioning["pooled_prompt_embeds"]
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=pooled.device, dtype=pooled.dtype).expand(len(pooled), -1)
        return {"encoder_hidden_states": conditioning["prompt_embeds"],
                "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


SDXL = SDXLFamily(SDXLFamily.Config(
    name="sdxl", title="a Stable Diffusion XL", pipeline="StableDiffusionXLPipeline",
    control_pipeline="StableDiffusionXLControlNetPipeline", controlnet_class="ControlNetModel",
    control_image_argument="image", denoiser="unet",
    components=("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler"),
    text_towers=(("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")),
    conditioning=("prompt_embeds", "pooled_prompt_embeds"),
    vae_scale_factor=8, size_multiple=8, native_canvas=(1024, 1024), objective="epsilon", schedule="scaled_linear",
    default_steps=30, default_guidance=5.0))
