"""Random weights in the exact shapes of the public base models, for the real-shape test tier and the GPU benchmark.

"random:controlnet-sd21-base" / "random:controlnet-sdxl-base" are ControlNets made from those UNets.
"random:sd21-base" has the configs of stabilityai/stable-diffusion-2-1-base (UNet, VAE, OpenCLIP-H text encoder,
tokenizer, PNDM scheduler) and "random:sdxl-base" those of stabilityai/stable-diffusion-xl-base-1.0 (UNet, VAE,
CLIP-L and OpenCLIP-bigG text encoders, tokenizers, Euler scheduler). Built offline and seeded, saved once in the
diffusers layout in the cache (fp16 on disk: half the space, and what GPU serving loads), then resolved and loaded
exactly like downloaded weights. Nothing here is a trained model: the pictures are noise, the shapes, memory and
compute are real.

"random:flux-slim" is black-forest-labs/FLUX.1-dev at its real widths (transformer hidden 3072 = 24 heads × 128,
joint attention 4096, pooled 768, 64 packed input channels, distilled-guidance embedding, RoPE axes 16/56/56; the
16-channel VAE; CLIP-L and its tokenizer) but one double and one single block instead of 19 and 38, and no T5 encoder
(FaceT5 brings its own; the T5 tokenizer is tiny:flux's): FaceT5-FLUX's real-shape tier, in a few GB.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from facegen.core.errors import ModelNotFound

RANDOM_VERSION = "v2"  # bump when a config below changes, so caches rebuild
KINDS = ("sd21-base", "sdxl-base", "flux-slim", "controlnet-sd21-base", "controlnet-sdxl-base")
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1)


def build_random(kind: str) -> Path:
    if kind not in KINDS:
        raise ModelNotFound(f"unknown random model 'random:{kind}' (known: {', '.join('random:' + k for k in KINDS)})")
    from facegen.core.cache import build_once

    def build(tmp: Path) -> None:
        # Built directly in fp16 (what is saved): SDXL-sized weights in fp32 would need ~14 GB of memory to build.
        default = torch.get_default_dtype()
        try:
            torch.set_default_dtype(torch.float16)
            with torch.random.fork_rng(devices=[]):
                builders = {"sd21-base": _sd21_base, "sdxl-base": _sdxl_base, "flux-slim": _flux_slim,
                            "controlnet-sd21-base": lambda out: _controlnet("sd21-base", out),
                            "controlnet-sdxl-base": lambda out: _controlnet("sdxl-base", out)}
                builders[kind](tmp)
        finally:
            torch.set_default_dtype(default)

    return build_once("random", f"{kind}-{RANDOM_VERSION}", build)


def _controlnet(base: str, out: Path) -> None:
    """A ControlNet made from the random base model's UNet (diffusers' `from_unet`, the public OpenPose ControlNets'
    shapes: the UNet's encoder half, the default conditioning embedding)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(build_random(base) / "unet", torch_dtype=torch.float16)
    ControlNetModel.from_unet(unet).to(torch.float16).save_pretrained(out, safe_serialization=True)


def _vae(seed: int, sample_size: int, scaling_factor: float, force_upcast: bool):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                         block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", sample_size=sample_size,
                         scaling_factor=scaling_factor, force_upcast=force_upcast).eval()


def _text_encoder(seed: int, hidden: int, layers: int, heads: int, intermediate: int, projection: int, act: str,
                  with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=intermediate,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                            projection_dim=projection, hidden_act=act, layer_norm_eps=1e-5)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _save(pipe, out: Path) -> None:
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)


def _sd21_base(out: Path) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from facegen.core.tiny import write_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=32).eval()
    write_clip_tokenizer(out / "_tok", pad_token="!")
    pipe = StableDiffusionPipeline(
        vae=_vae(1, 768, 0.18215, False),
        text_encoder=_text_encoder(2, 1024, 23, 16, 4096, 512, "gelu", False),
        tokenizer=CLIPTokenizer.from_pretrained(out / "_tok"), unet=unet,
        scheduler=PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, prediction_type="epsilon", **SCHEDULE),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    _save(pipe, out)
    shutil.rmtree(out / "_tok")


def _sdxl_base(out: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from facegen.core.tiny import write_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816, norm_num_groups=32).eval()
    write_clip_tokenizer(out / "_tok1", pad_token="<|endoftext|>")
    write_clip_tokenizer(out / "_tok2", pad_token="!")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(1, 1024, 0.13025, True),
        text_encoder=_text_encoder(2, 768, 12, 12, 3072, 768, "quick_gelu", False),
        text_encoder_2=_text_encoder(3, 1280, 32, 20, 5120, 1280, "gelu", True),
        tokenizer=CLIPTokenizer.from_pretrained(out / "_tok1"), tokenizer_2=CLIPTokenizer.from_pretrained(out / "_tok2"),
        unet=unet, scheduler=EulerDiscreteScheduler(interpolation_type="linear", prediction_type="epsilon",
                                                    timestep_spacing="leading", **SCHEDULE),
        add_watermarker=False)
    _save(pipe, out)
    shutil.rmtree(out / "_tok1")
    shutil.rmtree(out / "_tok2")


def _flux_slim(out: Path) -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTokenizer, T5TokenizerFast

    from facegen.core.tiny import write_clip_tokenizer, write_t5_tokenizer

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128, num_attention_heads=24,
        joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56)).eval()
    torch.manual_seed(1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, norm_num_groups=32,
                        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", sample_size=1024,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159,
                        scaling_factor=0.3611).eval()
    write_clip_tokenizer(out / "_tok1", pad_token="<|endoftext|>")
    write_t5_tokenizer(out / "_tok2")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae,
                        text_encoder=_text_encoder(2, 768, 12, 12, 3072, 768, "quick_gelu", False),
                        tokenizer=CLIPTokenizer.from_pretrained(out / "_tok1"), text_encoder_2=None,
                        tokenizer_2=T5TokenizerFast.from_pretrained(out / "_tok2"), transformer=transformer)
    _save(pipe, out)
    shutil.rmtree(out / "_tok1")
    shutil.rmtree(out / "_tok2")
