"""The tiny preset's diffusion models: random-initialised, small, saved in the real diffusers layout.

They let everything (pipelines, data build, training, serving) run on a 2-core CPU with no network, through the
same `from_pretrained` path as the real weights. Each build is seeded, so it is byte-for-byte reproducible, and is
written under a temporary name and renamed, so concurrent Ray workers never see half a model.

The CLIP tokenizer is CLIP's real BPE (vocab.json + merges.txt) rebuilt from the merge list that open_clip ships;
tiny:flux's T5 tokenizer is a small SentencePiece-style unigram vocabulary with T5's special tokens and rules.
"""
from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import torch

TINY_VERSION = "v1"  # bump when a config below changes, so caches rebuild
KINDS = ("sd21", "sdxl", "flux", "controlnet-sd21", "controlnet-sdxl", "controlnet-flux")


def build_tiny(kind: str) -> Path:
    if kind not in KINDS:
        from facegen.core.errors import ModelNotFound

        raise ModelNotFound(f"unknown tiny model 'tiny:{kind}' (known: {', '.join('tiny:' + k for k in KINDS)})")
    from facegen.core.cache import build_once

    builders = {"sd21": _build_sd21, "sdxl": _build_sdxl, "flux": _build_flux,
                "controlnet-sd21": lambda out: _build_controlnet("sd21", out),
                "controlnet-sdxl": lambda out: _build_controlnet("sdxl", out), "controlnet-flux": _build_flux_controlnet}
    return build_once("tiny", f"{kind}-{TINY_VERSION}", builders[kind])


# -- tokenizer ----------------------------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_clip_tokenizer(directory: Path, pad_token: str) -> None:
    """CLIP's tokenizer (49408 tokens) as CLIPTokenizer files, from open_clip's bundled BPE merges."""
    import open_clip
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    work = Path(tempfile.mkdtemp())
    (work / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (work / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tok = CLIPTokenizer(str(work / "vocab.json"), str(work / "merges.txt"), pad_token=pad_token, model_max_length=77)
    tok.save_pretrained(str(directory))
    shutil.rmtree(work, ignore_errors=True)


# Words the tiny T5 vocabulary holds whole (anything else is spelled in characters, as unigram models do).
T5_WORDS = ("a an the of in on at with and or to as by for from photo portrait person man woman face wearing "
            "standing sitting smiling looking camera light background city street beach forest kitchen chef "
            "painting style blue red green black white hat shirt glasses snow night day").split()


def write_t5_tokenizer(directory: Path, max_length: int = 512) -> int:
    """A T5 tokenizer (T5's special ids: <pad> 0, </s> 1, <unk> 2; "▁" word starts; </s> appended) over a small
    unigram vocabulary: characters and the words above. Returns its vocabulary size."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()*/&%$#@+=_"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -1.0) for w in T5_WORDS] + [(c, -5.0) for c in chars] + [("\u2581" + c, -4.0) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0,
                    model_max_length=max_length).save_pretrained(str(directory))
    return len(pieces)


# -- models -------------------------------------------------------------------------------------------------------
def _text_encoder(hidden: int, layers: int, projection: int, with_projection: bool, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=projection, hidden_act="gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    # Four blocks, like the real VAE, so latents are 1/8 of the image size and any multiple of 8 works.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, sample_size=64,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ).eval()


def _noise_schedule() -> dict:
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1, prediction_type="epsilon", timestep_spacing="leading")


def _build_sd21(out: Path) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
    ).eval()
    write_clip_tokenizer(out / "_tok", pad_token="!")  # SD2's OpenCLIP tokenizer pads with "!"
    pipe = StableDiffusionPipeline(
        vae=_vae(1), text_encoder=_text_encoder(32, 2, 32, False, 2), tokenizer=CLIPTokenizer.from_pretrained(out / "_tok"),
        unet=unet, scheduler=DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **_noise_schedule()),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "_tok")


def _build_sdxl(out: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    te1 = _text_encoder(32, 2, 32, False, 2)  # stands in for CLIP ViT-L (768)
    te2 = _text_encoder(64, 2, 32, True, 3)  # stands in for OpenCLIP bigG (1280, projection 1280)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32 + 64, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
        transformer_layers_per_block=(1, 1), addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
    ).eval()
    write_clip_tokenizer(out / "_tok1", pad_token="<|endoftext|>")
    write_clip_tokenizer(out / "_tok2", pad_token="!")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(1), text_encoder=te1, text_encoder_2=te2,
        tokenizer=CLIPTokenizer.from_pretrained(out / "_tok1"), tokenizer_2=CLIPTokenizer.from_pretrained(out / "_tok2"),
        unet=unet, scheduler=EulerDiscreteScheduler(interpolation_type="linear", **_noise_schedule()),
        add_watermarker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "_tok1")
    shutil.rmtree(out / "_tok2")


def _build_flux(out: Path) -> None:
    """FLUX.1-dev's layout at tiny widths: a FluxTransformer2DModel (64 packed input channels, distilled guidance
    embedding, RoPE), a 16-channel VAE with FLUX's shift and scale, CLIP-L and T5 text encoders with their
    tokenizers, and FLUX.1-dev's flow-matching scheduler config."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6)).eval()
    torch.manual_seed(1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=8, sample_size=64,
        block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.1159, scaling_factor=0.3611).eval()
    write_clip_tokenizer(out / "_tok1", pad_token="<|endoftext|>")
    vocab = write_t5_tokenizer(out / "_tok2")
    torch.manual_seed(3)
    t5 = T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                 feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                                 relative_attention_max_distance=128, layer_norm_epsilon=1e-6)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=_text_encoder(32, 2, 32, False, 2),
                        tokenizer=CLIPTokenizer.from_pretrained(out / "_tok1"), text_encoder_2=t5,
                        tokenizer_2=T5TokenizerFast.from_pretrained(out / "_tok2"), transformer=transformer)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "_tok1")
    shutil.rmtree(out / "_tok2")


def _build_controlnet(base: str, out: Path) -> None:
    """A ControlNet for tiny:<base>, made from its UNet as diffusers does for real ones (`from_unet`). Its zero
    convolutions get small seeded random weights: at zero a ControlNet changes nothing, and tests must see control."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(build_tiny(base) / "unet")
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 64))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.05)
    controlnet.save_pretrained(out, safe_serialization=True)


def _build_flux_controlnet(out: Path) -> None:
    """A FLUX ControlNet for tiny:flux, made from its transformer as diffusers does (`from_transformer`; one double
    block, no single block, as Union-Pro-2.0 has double blocks only), its zero layers given small seeded weights."""
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(build_tiny("flux") / "transformer")
    controlnet = FluxControlNetModel.from_transformer(transformer, num_layers=1, num_single_layers=0,
                                                      attention_head_dim=16, num_attention_heads=2)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for module in [*controlnet.controlnet_blocks, controlnet.controlnet_x_embedder]:
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.05)
    controlnet.save_pretrained(out, safe_serialization=True)
