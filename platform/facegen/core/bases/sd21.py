"""Stable Diffusion 2.1 (and 2.1-base): one OpenCLIP-H text tower, a UNet on ε (base) or v-prediction (768)."""
from __future__ import annotations

from facegen.core.bases.text_towers import TextTowerFamily

NO_SAFETY_CHECKER = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


class SD21Family(TextTowerFamily):
    def load_kwargs(self) -> dict:
        return dict(NO_SAFETY_CHECKER)

    def denoiser_kwargs(self) -> dict:
        return dict(NO_SAFETY_CHECKER)

    def encode_prompt(self, parts, prompts, values=None, num_tokens=0, require_placeholder=False) -> dict:
        """prompt_embeds: the tower's last hidden states (B×77×D), as StableDiffusionPipeline.encode_prompt."""
        (out,) = self.tower_outputs(parts, prompts, values, num_tokens, require_placeholder)
        return {"prompt_embeds": out.last_hidden_state}


SD21 = SD21Family(SD21Family.Config(
    name="sd21", title="a Stable Diffusion 2.1", pipeline="StableDiffusionPipeline",
    control_pipeline="StableDiffusionControlNetPipeline", controlnet_class="ControlNetModel",
    control_image_argument="image", denoiser="unet",
    components=("vae", "text_encoder", "tokenizer", "unet", "scheduler"),
    text_towers=(("tokenizer", "text_encoder"),), conditioning=("prompt_embeds",),
    vae_scale_factor=8, size_multiple=8, native_canvas=(768, 768), objective="epsilon", schedule="scaled_linear",
    default_steps=30, default_guidance=7.5))
