"""FLUX.1: a DiT over 2×2-packed latents (sides multiples of 16), conditioned by T5 hidden states and CLIP-L's
pooled embedding, trained by flow matching (rectified flow: predict noise − x₀ at a logit-normal σ)."""
from __future__ import annotations

from facegen.core.bases.family import BaseFamily


class FluxFamily(BaseFamily):
    def prepare_call(self, denoiser, kwargs: dict, control: bool) -> dict:
        """diffusers' FluxControlNetPipeline samples the control image's VAE latents from the request's generator
        before it draws the noise, so under control the same seed would start from other noise and a head box would
        move the whole composition. The noise is drawn here first, as the plain FluxPipeline draws it, and given."""
        if not control or kwargs.get("latents") is not None:
            return kwargs
        embeds = kwargs["prompt_embeds"]
        images = embeds.shape[0] * kwargs.get("num_images_per_prompt", 1)
        channels = denoiser.transformer.config.in_channels // 4
        latents, _ = denoiser.prepare_latents(images, channels, kwargs["height"], kwargs["width"], embeds.dtype,
                                              denoiser._execution_device, kwargs.get("generator"))
        return {**kwargs, "latents": latents}

    def clean_latents(self, vae, images, use_mean: bool):
        """x₀ of target images in [-1, 1]: the VAE's latents, shifted and scaled as FLUX's pipeline undoes them."""
        dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
        return ((dist.mean if use_mean else dist.sample()) - vae.config.shift_factor) * vae.config.scaling_factor

    def training_loss(self, transformer, x0, seeds, conditioning: dict, logit_mean: float, logit_std: float,
                      distilled_guidance: float):
        """Flow matching: x_σ = (1 − σ)·x₀ + σ·noise at σ = sigmoid(logit_mean + logit_std·N(0,1)); the DiT predicts
        noise − x₀ (on packed latents). `seeds` (one per row) fix each row's noise and σ."""
        import torch
        import torch.nn.functional as F
        from diffusers import FluxPipeline

        x0 = x0.float()
        b, c, h, w = x0.shape
        device = x0.device
        if seeds is not None:
            gens = [torch.Generator().manual_seed(seed) for seed in seeds]
            noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
            normal = torch.cat([torch.randn(1, generator=g) for g in gens])
        else:
            noise, normal = torch.randn(x0.shape, dtype=torch.float32), torch.randn(b)
        noise, sigma = noise.to(device), torch.sigmoid(logit_mean + logit_std * normal).to(device)
        s = sigma[:, None, None, None]
        noisy = (1 - s) * x0 + s * noise
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, device, torch.float32)
        dtype = next(p.dtype for p in transformer.parameters() if not p.requires_grad)
        guidance = torch.full((b,), distilled_guidance, device=device) if transformer.config.guidance_embeds else None
        embeds = conditioning["prompt_embeds"]
        pred = transformer(hidden_states=pack(noisy).to(dtype), timestep=sigma.to(dtype), guidance=guidance,
                           pooled_projections=conditioning["pooled_prompt_embeds"].to(dtype),
                           encoder_hidden_states=embeds.to(dtype), txt_ids=torch.zeros(embeds.shape[1], 3, device=device),
                           img_ids=img_ids, return_dict=False)[0]
        return F.mse_loss(pred.float(), pack(noise - x0))


def pack(latents):
    """B×C×H×W latents → B×(H/2·W/2)×4C tokens, FLUX's 2×2 patches (FluxPipeline._pack_latents)."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


FLUX = FluxFamily(FluxFamily.Config(
    name="flux", title="a FLUX.1", pipeline="FluxPipeline", control_pipeline="FluxControlNetPipeline",
    controlnet_class="FluxControlNetModel", control_image_argument="control_image", denoiser="transformer",
    components=("transformer", "vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"),
    text_towers=(), conditioning=("prompt_embeds", "pooled_prompt_embeds"),
    vae_scale_factor=8, size_multiple=16, native_canvas=(1024, 1024), objective="flow_matching",
    schedule="flow_match_euler (logit-normal σ in training)", default_steps=28, default_guidance=3.5))
