"""Where models run and in which precision: the dtype/device decisions, SDXL's fp16 VAE, VAE slicing and tiling."""
import pytest


def test_dtype_and_device_decisions_without_a_gpu():
    import torch
    from facegen.core import devices
    from facegen.core.errors import ConfigError

    assert devices.resolve("auto", "cuda").dtype == torch.float16  # asked what it would pick on a GPU
    assert devices.resolve("auto", "cpu").dtype == torch.float32
    assert devices.resolve("bf16", "cuda").dtype == torch.bfloat16
    assert devices.resolve("auto", "cuda").encoder_dtype == torch.float32  # encoders stay fp32
    with pytest.raises(ConfigError, match="methods.faceclip.dtype 'fp8'"):
        devices.resolve("fp8", "cpu", key="methods.faceclip.dtype")


def test_fp16_sdxl_vae_is_decoded_in_fp32():
    """SDXL's VAE overflows in fp16: an fp16 VAE whose config says force_upcast decodes through diffusers' upcast
    to finite pixels (run on the CPU, where torch has fp16 convolutions)."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline
    from facegen.core.bases import SDXL

    c = SDXL.load("tiny:sdxl", torch_dtype=torch.float16)
    assert c["vae"].dtype == torch.float16 and c["vae"].config.force_upcast
    pipe = StableDiffusionXLPipeline(**c, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 8, 8, dtype=torch.float16) * 300  # big enough to overflow fp16 activations
    out = pipe(prompt_embeds=torch.zeros(1, 77, 96, dtype=torch.float16),
               pooled_prompt_embeds=torch.zeros(1, 32, dtype=torch.float16), latents=latents, num_inference_steps=1,
               guidance_scale=1.0, height=64, width=64, output_type="np").images
    assert np.isfinite(out).all()


def test_vae_slices_batches_and_tiles_large_canvases():
    from facegen.core.bases import SD21
    from facegen.core.methods.pipeline_utils import fit_vae_to

    vae = SD21.load("tiny:sd21")["vae"]
    fit_vae_to(vae, images=1, height=512, width=512)
    assert (vae.use_slicing, vae.use_tiling) == (False, False)
    fit_vae_to(vae, images=4, height=512, width=512)
    assert (vae.use_slicing, vae.use_tiling) == (True, False)
    fit_vae_to(vae, images=1, height=2048, width=2048)
    assert (vae.use_slicing, vae.use_tiling) == (False, True)

