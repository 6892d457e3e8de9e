"""The miniature world's base models: small diffusion models trained from scratch to draw a *space* of people — every
blend of the anchors — from a code in the prompt, and to obey one edit ("... in black and white").

The code of identity w is S* = Σ wₖ · Eₖ, with Eₖ a learned table per anchor: the same for every identity, so an
identity's conditioning is a fixed function of how it was made (never a free per-identity parameter, never computed
from a face recognizer). It reaches each model through the token-injection path its method uses:
  * SD2.1 layout (DreamIdentity): "a photo of S*" with S*'s 2 slots written into the text encoder's token embeddings
    (models/tokens.py), exactly where the M² encoder writes its id_tokens;
  * SDXL layout (FaceCLIP): FaceCLIP's prefixed prompt "photo of a S* person. a photo of a person", one slot in each
    of the two text towers, exactly where FaceCLIP writes its face embedding's projection.
The training identities are also written into the SD2.1 model's vocabulary as names (two added tokens each, their
embedding rows = their code), as SD knows celebrities by name: the data job draws them by name.

Three parts, trained in turn, each seeded (a rebuild gives the same weights) and saved in the real diffusers layout,
so every pipeline and job loads them through the same `from_pretrained` path as real weights:
  1. a VAE (AutoencoderKL, 3 blocks: size² images ↔ (size/4)² × C latents), shared by both models;
  2. an SD2.1-layout model (CLIP text encoder + UNet, DDIM) for DreamIdentity;
  3. an SDXL-layout model (two text encoders read at their penultimate layer, pooled text + size conditioning,
     Euler) for FaceCLIP.
The text encoders and the anchor tables train with the UNets; the UNets predict v (as SD 2.1-768 does: stable
sampling for a small model); an exponential moving average of the weights is what is saved. One prompt in
`uncond_share` is dropped, as SD trains for classifier-free guidance: "" for SD2.1, and for SDXL the prefixed empty
prompt with a zero code (what FaceCLIP's negative reads).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegen.cluster.world.config import WorldConfig
from facegen.core.models.tokens import encode_with_slots

TOKEN_INIT_SCALE = 25.0  # token embeddings start at std 0.5 (CLIP's init: 0.02)
PROMPT = "a photo of {}"
# The edit, in the phrasings the base model learns (the self-augmented set asks for each; scoring uses the first).
EDITS = ("a photo of {} in black and white", "a black and white photo of {}", "a photo of {}, black and white")
SD21_SLOTS = 2  # DreamIdentity's k: S* is two pseudo-words
CODES_FILE = "anchor_codes.safetensors"  # the anchor tables Eₖ, beside model_index.json


def name_tokens(name: str) -> list[str]:
    """The two added tokens a training identity's name is written with in the SD2.1 model's vocabulary."""
    return [f"<{name}a>", f"<{name}b>"]


def name_word(name: str) -> str:
    """A training identity's name as a prompt says it ("a photo of <id042a><id042b>")."""
    return "".join(name_tokens(name))


def encode_images(vae, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    """uint8 N×H×W×3 → scaled latent means (N×C×h×w)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def train_vae(images: np.ndarray, cfg: WorldConfig, log=print):
    """A small AutoencoderKL (size² ↔ (size/4)²×C) trained to reconstruct the views; latents scaled to unit variance."""
    from diffusers import AutoencoderKL

    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=cfg.latent_channels, layers_per_block=1,
                        norm_num_groups=8, sample_size=cfg.size, block_out_channels=(16, 32, 64),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    # cosine decay to zero: at 300 constant-rate steps a round trip kept ArcFace similarity 0.40 to the original;
    # decayed over 1,000 steps, 0.62 (identification 1.0 either way)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.vae_steps)))
    g = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    for step in range(cfg.vae_steps):
        x = x_all[torch.randint(0, len(x_all), (cfg.batch_size,), generator=g)]
        dist = vae.encode(x).latent_dist
        rec = vae.decode(dist.sample(generator=g)).sample
        loss = F.mse_loss(rec, x) + 0.1 * F.l1_loss(rec, x) + 1e-6 * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr.step()
        if step % 100 == 0 or step == cfg.vae_steps - 1:
            log(f"  vae step {step + 1}/{cfg.vae_steps}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f}s)")
    vae.eval()
    deterministic_posterior(vae)
    vae.register_to_config(scaling_factor=1.0)
    with torch.no_grad():
        std = float(encode_images(vae, images[:: max(1, len(images) // 256)]).std())
    vae.register_to_config(scaling_factor=1.0 / std)  # unit-variance latents, as SD's 0.18215 gives its VAE
    return vae.requires_grad_(False)


def deterministic_posterior(vae) -> None:
    """Make the encoder's posterior a point (log-variance −20): the decoder learned to read noisy samples, but the
    world's latents are its means — for the base models (trained on means) and for the methods' training jobs, which
    draw `latent_dist.sample()` (an untouched posterior's noise, σ ≈ 0.9 of the signal, would drown their targets)."""
    with torch.no_grad():
        conv = vae.quant_conv if vae.quant_conv is not None else vae.encoder.conv_out
        c = vae.config.latent_channels
        conv.weight[c:] = 0.0
        conv.bias[c:] = -20.0


def _noise_schedule() -> dict:
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1, prediction_type="v_prediction", timestep_spacing="leading")


def _text_encoder(hidden: int, projection: int | None, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=projection or hidden,
                            hidden_act="gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    with torch.no_grad():  # CLIP's 0.02-std token table makes every name nearly the same vector at the start: the
        model.get_input_embeddings().weight.mul_(TOKEN_INIT_SCALE)  # names must differ before the UNet can use them
    return model


def _tokenizer(work: Path, pad: str):
    from transformers import CLIPTokenizer

    from facegen.core.tiny import write_clip_tokenizer

    write_clip_tokenizer(work, pad_token=pad)
    return CLIPTokenizer.from_pretrained(work)


def _ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


class AnchorCodes(torch.nn.Module):
    """The anchor tables Eₖ of one model, one per text tower (K × slots × width): code(w) = Σ wₖ Eₖ."""

    def __init__(self, anchors: int, slots: int, widths: list[int], seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.tables = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(anchors, slots, w, generator=g) * 0.02 * TOKEN_INIT_SCALE) for w in widths)

    def forward(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """B×K weights → per tower, B×slots×width codes."""
        return [torch.einsum("bk,ksd->bsd", weights.to(t.dtype), t) for t in self.tables]

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}{i}": t.detach().clone().contiguous() for i, t in enumerate(self.tables)}


def inject(text_encoder, tokenizer, prompts: list[str], codes: torch.Tensor, output_hidden_states: bool = False):
    """The text encoder run on prompts whose "S*" slots hold `codes` (B×slots×D; a prompt without S* takes none):
    the methods' own token-injection path (facegen.core.models.tokens.encode_with_slots)."""
    return encode_with_slots(text_encoder, tokenizer, prompts, codes, codes.shape[1],
                             output_hidden_states=output_hidden_states)


def sdxl_code_conditioning(te1, te2, tokenizer, tokenizer_2, prompts: list[str], code1: torch.Tensor,
                           code2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's (prompt_embeds, pooled) for world prompts ("a photo of S*") read as FaceCLIP reads them — its prefix
    with the id slot — the slot of each tower holding its code (B×1×D1, B×1×D2)."""
    from facegen.core.methods.faceclip.config import FaceCLIPEncoderConfig
    from facegen.core.methods.faceclip.encoder import prefixed_prompt

    texts = [prefixed_prompt(FaceCLIPEncoderConfig(), p) for p in prompts]
    h1 = inject(te1, tokenizer, texts, code1, output_hidden_states=True).hidden_states[-2]
    out2 = inject(te2, tokenizer_2, texts, code2, output_hidden_states=True)
    return torch.cat([h1, out2.hidden_states[-2]], dim=-1), out2.text_embeds


class _Batches:
    """Seeded training batches over the training identities' views, a share edited and a share dropped:
    (latents, prompts with S*, B×K weights, dropped)."""

    def __init__(self, latents: dict[str, torch.Tensor], edited: dict[str, torch.Tensor],
                 weights: dict[str, np.ndarray], cfg: WorldConfig):
        self.names = sorted(latents)
        self.latents, self.edited, self.cfg = latents, edited, cfg
        self.weights = torch.tensor(np.stack([weights[n] for n in self.names]), dtype=torch.float32)
        self.g = torch.Generator().manual_seed(cfg.seed + 1)

    def __call__(self):
        c, rows, prompts, index, dropped = self.cfg, [], [], [], []
        for _ in range(c.batch_size):
            i = int(torch.randint(0, len(self.names), (1,), generator=self.g))
            name = self.names[i]
            view = int(torch.randint(0, len(self.latents[name]), (1,), generator=self.g))
            edit = float(torch.rand(1, generator=self.g)) < c.edit_share
            rows.append((self.edited if edit else self.latents)[name][view])
            phrasing = EDITS[int(torch.randint(0, len(EDITS), (1,), generator=self.g))]
            prompts.append((phrasing if edit else PROMPT).format("S*"))
            index.append(i)
            dropped.append(float(torch.rand(1, generator=self.g)) < c.uncond_share)
        return torch.stack(rows), prompts, self.weights[index], torch.tensor(dropped)


class _EMA:
    """An exponential moving average of parameters (decay warmed up as 1 − 1/(step/10 + 1), capped at `decay`)."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]
        self.step = 0

    @torch.no_grad()
    def update(self) -> None:
        self.step += 1
        d = min(self.decay, 1 - 1 / (self.step / 10 + 1))
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)


def _train(unet, modules: list, condition, batches: _Batches, cfg: WorldConfig, label: str, log,
           min_snr_gamma: float = 0.0) -> None:
    """Denoising loss over the world's (view, prompt, code) triples; the UNet, the text encoders and the anchor
    tables train together; the EMA of their weights is kept."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**_noise_schedule())
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    # Min-SNR-γ loss weights (Hang et al., 2023; diffusers' `snr_gamma`), for v: min(SNR, γ) / (SNR + 1). The
    # near-clean steps, which only polish texture, stop dominating the gradient: the codes are learned sooner.
    weights = torch.clamp(snr, max=min_snr_gamma) / (snr + 1) if min_snr_gamma else torch.ones_like(snr)
    modules = [unet, *modules]
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    # warm-up, then cosine decay to zero: a small model samples far better from a decayed end point
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / cfg.base_steps)))
    ema = _EMA(params, cfg.ema)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    for m in modules:
        m.train()
    start = time.perf_counter()
    for step in range(cfg.base_steps):
        latents, prompts, w, dropped = batches()
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=g)
        pred = unet(scheduler.add_noise(latents, noise, t), t, **condition(prompts, w, dropped)).sample
        per_sample = F.mse_loss(pred, scheduler.get_velocity(latents, noise, t), reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * weights[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr.step()
        ema.update()
        if step % 200 == 0 or step == cfg.base_steps - 1:
            log(f"  {label} step {step + 1}/{cfg.base_steps}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f}s)")
    ema.copy_to_params()
    for m in modules:
        m.eval()


def _unet(cfg: WorldConfig, cross_attention_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    w = cfg.unet_width
    return UNet2DConditionModel(
        sample_size=cfg.size // 4, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        layers_per_block=1, block_out_channels=(w, 2 * w), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=4, use_linear_projection=True, norm_num_groups=8, **extra)


def build_sd21(out: Path, vae, latents, edited, weights: dict[str, np.ndarray], cfg: WorldConfig, log=print) -> None:
    """The SD2.1-layout model; `weights` are the training identities' (name → K weights)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from safetensors.torch import save_file

    tokenizer = _tokenizer(out / "_tok", pad="!")  # SD2's OpenCLIP tokenizer pads with "!"
    text_encoder = _text_encoder(64, None, cfg.seed + 3)
    k = len(next(iter(weights.values())))
    codes = AnchorCodes(k, SD21_SLOTS, [64], cfg.seed + 8)
    torch.manual_seed(cfg.seed + 4)
    unet = _unet(cfg, 64)

    def condition(prompts, w, dropped):
        prompts = ["" if d else p for p, d in zip(prompts, dropped.tolist())]
        return {"encoder_hidden_states": inject(text_encoder, tokenizer, prompts, codes(w)[0])[0]}

    _train(unet, [text_encoder, codes], condition, _Batches(latents, edited, weights, cfg), cfg, "sd21", log,
           cfg.sd21_min_snr_gamma)
    # The training identities' names: two added tokens each, whose embedding rows are the identity's code.
    names = sorted(weights)
    tokenizer.add_tokens([t for n in names for t in name_tokens(n)])
    table = text_encoder.resize_token_embeddings(len(tokenizer)).weight
    with torch.no_grad():
        named = codes(torch.tensor(np.stack([weights[n] for n in names]), dtype=torch.float32))[0]
        for n, code in zip(names, named):
            for token, row in zip(name_tokens(n), code):
                table[tokenizer.convert_tokens_to_ids(token)] = row
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **_noise_schedule()),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    _save(pipe, out, cfg, ["_tok"])
    save_file(codes.state("sd21_"), str(out / CODES_FILE))


def _sdxl_parts(out: Path, cfg: WorldConfig, k: int, slots: int, seeds: tuple[int, int, int, int]):
    """An SDXL-layout model's untrained parts — tokenizers, CLIP-L- and bigG-like towers (32 and 64 wide), the anchor
    tables, a UNet with SDXL's added conditioning — and the size condition SDXL's pipeline gives a cfg.size² image."""
    tokenizer, tokenizer_2 = _tokenizer(out / "_tok1", "<|endoftext|>"), _tokenizer(out / "_tok2", "!")
    te1, te2 = _text_encoder(32, None, cfg.seed + seeds[0]), _text_encoder(64, 32, cfg.seed + seeds[1])
    codes = AnchorCodes(k, slots, [32, 64], cfg.seed + seeds[2])
    torch.manual_seed(cfg.seed + seeds[3])
    unet = _unet(cfg, 32 + 64, transformer_layers_per_block=1, addition_embed_type="text_time",
                 addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32)
    time_ids = torch.tensor([[cfg.size, cfg.size, 0, 0, cfg.size, cfg.size]], dtype=torch.float32)
    return tokenizer, tokenizer_2, te1, te2, codes, unet, time_ids


def _train_and_save_sdxl(out: Path, vae, parts, condition, batches, cfg: WorldConfig, label: str, log) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from safetensors.torch import save_file

    tokenizer, tokenizer_2, te1, te2, codes, unet, _ = parts
    _train(unet, [te1, te2, codes], condition, batches, cfg, label, log, cfg.sdxl_min_snr_gamma)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer_2, unet=unet,
                                     scheduler=EulerDiscreteScheduler(interpolation_type="linear", **_noise_schedule()),
                                     add_watermarker=False)
    _save(pipe, out, cfg, ["_tok1", "_tok2"])
    save_file(codes.state("sdxl_"), str(out / CODES_FILE))


def build_sdxl(out: Path, vae, latents, edited, weights: dict[str, np.ndarray], cfg: WorldConfig, log=print) -> None:
    """The SDXL-layout model taught codes at FaceCLIP's id slot of its prefixed prompt, in both towers."""
    parts = _sdxl_parts(out, cfg, len(next(iter(weights.values()))), 1, (5, 6, 9, 7))
    tokenizer, tokenizer_2, te1, te2, codes, _, time_ids = parts

    def condition(prompts, w, dropped):
        prompts = ["" if d else p for p, d in zip(prompts, dropped.tolist())]
        keep = (~dropped).float()[:, None, None]
        code1, code2 = codes(w)
        embeds, pooled = sdxl_code_conditioning(te1, te2, tokenizer, tokenizer_2, prompts, code1 * keep, code2 * keep)
        return {"encoder_hidden_states": embeds,
                "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids.expand(len(prompts), -1)}}

    _train_and_save_sdxl(out, vae, parts, condition, _Batches(latents, edited, weights, cfg), cfg, "sdxl", log)


def build_sdxl_tokens(out: Path, vae, latents, edited, weights: dict[str, np.ndarray], cfg: WorldConfig,
                      log=print) -> None:
    """The SDXL-layout model taught codes through DreamIdentity's path on SDXL (`dreamidentity-sdxl`): S* is
    SD21_SLOTS pseudo-words in both towers, each tower's share of the code in its token table, and the conditioning
    is the SDXL family's own (facegen.core.bases.SDXL.encode_prompt: penultimate states side by side, bigG's pooled
    embedding) — the path the method's pipeline runs."""
    from facegen.core.bases import SDXL

    parts = _sdxl_parts(out, cfg, len(next(iter(weights.values()))), SD21_SLOTS, (10, 11, 12, 13))
    tokenizer, tokenizer_2, te1, te2, codes, _, time_ids = parts
    towers = {"tokenizer": tokenizer, "text_encoder": te1, "tokenizer_2": tokenizer_2, "text_encoder_2": te2}

    def condition(prompts, w, dropped):
        # A dropped row is all zeros, as SDXL was trained and as its pipeline reads an empty negative prompt.
        keep = (~dropped).float()
        c = SDXL.encode_prompt(towers, prompts, torch.cat(codes(w), dim=-1), SD21_SLOTS)
        return {"encoder_hidden_states": c["prompt_embeds"] * keep[:, None, None],
                "added_cond_kwargs": {"text_embeds": c["pooled_prompt_embeds"] * keep[:, None],
                                      "time_ids": time_ids.expand(len(prompts), -1)}}

    _train_and_save_sdxl(out, vae, parts, condition, _Batches(latents, edited, weights, cfg), cfg, "sdxl-tokens", log)


def load_codes(model_dir: Path) -> list[torch.Tensor]:
    """A world base model's anchor tables, one per text tower (K × slots × width)."""
    from safetensors.torch import load_file

    state = load_file(str(Path(model_dir) / CODES_FILE))
    return [state[k] for k in sorted(state, key=lambda k: int(k.rsplit("_", 1)[1]))]


def code_of(tables: list[torch.Tensor], weights: np.ndarray) -> list[torch.Tensor]:
    """Per tower, the slots×width code Σ wₖ Eₖ of one identity."""
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    return [torch.einsum("k,ksd->sd", w, t) for t in tables]


def _save(pipe, out: Path, cfg: WorldConfig, scratch: list[str]) -> None:
    import shutil

    pipe.save_pretrained(out, safe_serialization=True)
    for name in scratch:
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "world.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
