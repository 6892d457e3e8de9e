"""The Stable Diffusion families (SD 2.1, SDXL): CLIP text towers a method can write vectors into — DreamIdentity's
"S*" slots — and a UNet trained on the ε- or v-prediction objective."""
from __future__ import annotations

from facegen.core.bases.family import BaseFamily


class TextTowerFamily(BaseFamily):
    def token_dims(self, ref: str, sha256: dict[str, str] | None = None) -> tuple[int, ...]:
        """The token-embedding width of each text tower, from their configs alone (no weights loaded)."""
        return tuple(int(self.read_config(ref, sha256, encoder)["hidden_size"]) for _, encoder in self.config.text_towers)

    def token_dims_of(self, parts: dict) -> tuple[int, ...]:
        return tuple(parts[encoder].get_input_embeddings().embedding_dim for _, encoder in self.config.text_towers)

    def tower_outputs(self, parts: dict, prompts: list[str], values, num_tokens: int, require_placeholder: bool):
        """Each text tower run on `prompts` with its share of `values` (B×k×ΣD, the towers' widths side by side)
        written into the "S*" slots."""
        from facegen.core.models.tokens import encode_with_slots

        outputs, start = [], 0
        for (tokenizer, encoder), dim in zip(self.config.text_towers, self.token_dims_of(parts)):
            share = None if values is None else values[..., start:start + dim]
            start += dim
            outputs.append(encode_with_slots(parts[encoder], parts[tokenizer], prompts, share, num_tokens,
                                             require_placeholder, output_hidden_states=True))
        return outputs

    def encode_prompt(self, parts: dict, prompts: list[str], values=None, num_tokens: int = 0,
                      require_placeholder: bool = False) -> dict:
        """The family's conditioning (config.conditioning: what its diffusers pipeline takes) for `prompts`, the
        "S*" slots holding `values`, exactly as the pipeline's own encode_prompt computes it for words."""
        raise NotImplementedError

    def encode_negative(self, parts: dict, prompts: list[str], values=None, num_tokens: int = 0) -> dict:
        """The negative conditioning, keyed as the pipeline takes it (negative_<name>)."""
        return {f"negative_{k}": v for k, v in self.encode_prompt(parts, prompts, values, num_tokens).items()}

    def unet_kwargs(self, conditioning: dict, latents, vae_scale_factor: int) -> dict:
        """The conditioning as the UNet's forward takes it in training."""
        return {"encoder_hidden_states": conditioning["prompt_embeds"]}

    def training_loss(self, unet, scheduler, latents, seeds, conditioning: dict, vae_scale_factor: int):
        """The family's objective: ε- or v-prediction MSE (as the scheduler's config says) at a random timestep."""
        from facegen.core.methods.training_utils import diffusion_loss

        kwargs = self.unet_kwargs({k: v.to(unet.dtype) for k, v in conditioning.items()}, latents, vae_scale_factor)
        return diffusion_loss(unet, scheduler, latents, seeds, **kwargs)
