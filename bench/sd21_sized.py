"""A random-weight model with Stable Diffusion 2.1-base's shapes (865M-parameter UNet, SD VAE, OpenCLIP-H text
encoder), saved once in the diffusers layout: speed figures on a GPU need real sizes, not real weights."""
import shutil
from pathlib import Path

import torch


def build_sd21_sized() -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from facegen.tiny import _noise_schedule, write_clip_tokenizer
    from facegen.weights import cache_dir
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    target = cache_dir() / "bench" / "sd21-sized-v1"
    if (target / "model_index.json").is_file():
        return target
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                        num_hidden_layers=23, num_attention_heads=16, max_position_embeddings=77,
                                        projection_dim=512, hidden_act="gelu", bos_token_id=49406,
                                        eos_token_id=49407, pad_token_id=1))
    tmp = target.with_name(target.name + ".tmp")
    write_clip_tokenizer(tmp / "_tok", pad_token="!")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(tmp / "_tok"),
                                   unet=unet, scheduler=DDIMScheduler(clip_sample=False, set_alpha_to_one=False,
                                                                      **_noise_schedule()),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(tmp / "_tok")
    tmp.rename(target)
    return target
