"""ByteDance's FaceT5 encoder for FLUX.1-dev, written for facegen: state-dict names and shapes are exactly those of
`face_t5_encoder.pt` (the official `FaceT5FluxWrapper`), so the published weights load strictly; the outputs match
the official code (tests/fixtures/facet5_official, made from bytedance/FaceCLIP @ a984887).

Reading it top to bottom, for B prompts and one aligned face each:
  1. pooled: FLUX's CLIP-L text encoder (`encoder_1`) on the prompt, 77 tokens → its pooler output, B×768;
  2. text: the T5 v1.1 XXL encoder stack (`encoder_2.t5_encoder`, FlashT5's parameter names, written here in plain
     PyTorch: no triton) on the prompt padded to 512 tokens → B×512×4096, plus a fixed sinusoidal position table;
  3. face: the aligned crop in [0, 1] (no mean/std), bilinear to 112 → the face ViT's 144 patch tokens (its
     identity vector is computed but, as in the official forward, not used) → Linear to 4096, the ViT's position
     table likewise;
  4. the fuser: GroundingDINO's feature enhancer at width 4096 — FaceCLIP-SDXL's bi-attention and text enhancer, but
     a plain face self-attention layer where FaceCLIP has deformable attention; its text stream is prompt_embeds,
     B×512×4096.
There is no "id" word: the face enters through the fuser only. The negative: an all-zero face with the negative
prompt, through the same encoder.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from torch import nn

from facegen.core.errors import ModelNotFound
from facegen.core.methods.faceclip.config import OfficialFuserConfig
from facegen.core.methods.faceclip.official import VIT_SIZE, BiAttentionBlock, TextEnhancerLayer
from facegen.core.methods.facet5.config import ClipLConfig, FaceT5Config, T5StackConfig
from facegen.core.models.export import load_export_weights, read_export, save_export
from facegen.core.models.face_vit import FaceViT


# -- the T5 encoder stack (FlashT5's names) -----------------------------------------------------------------------
class T5LayerNorm(nn.Module):
    """RMS norm without bias or mean subtraction, accumulated in fp32 (T5's)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        y = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            y = y.to(self.weight.dtype)
        return (self.weight * y).type_as(x)


class RelativePositionBias(nn.Module):
    """T5's bidirectional relative-position buckets → a per-head additive attention bias (1×H×L×L)."""

    def __init__(self, c: T5StackConfig):
        super().__init__()
        self.relative_attention_bias = nn.Embedding(c.buckets, c.heads)
        self.buckets, self.max_distance = c.buckets, c.max_distance

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        half = self.buckets // 2  # bidirectional: half the buckets for keys after the query
        out = (relative > 0).long() * half
        distance = relative.abs()
        exact = half // 2  # small distances get a bucket each, larger ones logarithmic bins up to max_distance
        log_bins = exact + (torch.log(distance.float() / exact) / math.log(self.max_distance / exact)
                            * (half - exact)).long()
        log_bins = torch.clamp(log_bins, max=half - 1)
        return out + torch.where(distance < exact, distance, log_bins)

    def forward(self, length: int, device) -> torch.Tensor:
        positions = torch.arange(length, device=device)
        relative = positions[None, :] - positions[:, None]  # key − query
        return self.relative_attention_bias(self.bucket(relative)).permute(2, 0, 1)[None]


class T5Attention(nn.Module):
    def __init__(self, c: T5StackConfig, position_bias: bool):
        super().__init__()
        inner = c.heads * c.d_kv
        self.heads, self.d_kv = c.heads, c.d_kv
        self.pe_encoding = RelativePositionBias(c) if position_bias else None
        self.Wq = nn.Linear(c.d_model, inner, bias=False)
        self.Wk = nn.Linear(c.d_model, inner, bias=False)
        self.Wv = nn.Linear(c.d_model, inner, bias=False)
        self.o = nn.Linear(inner, c.d_model, bias=False)

    def forward(self, x, bias):
        b, n, _ = x.shape
        q, k, v = (w(x).view(b, n, self.heads, self.d_kv).transpose(1, 2) for w in (self.Wq, self.Wk, self.Wv))
        # T5 does not scale the logits (its init folds 1/√d_kv into Wq): scale 1.0, the bias added, no mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        return self.o(out.transpose(1, 2).reshape(b, n, self.heads * self.d_kv))


class T5SelfAttentionLayer(nn.Module):
    def __init__(self, c: T5StackConfig, position_bias: bool):
        super().__init__()
        self.self_attention = T5Attention(c, position_bias)
        self.layer_norm = T5LayerNorm(c.d_model, c.eps)

    def forward(self, x, bias):
        return x + self.self_attention(self.layer_norm(x), bias)


class T5GatedGelu(nn.Module):
    def __init__(self, c: T5StackConfig):
        super().__init__()
        self.wi_0 = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.wi_1 = nn.Linear(c.d_model, c.d_ff, bias=False)

    def forward(self, x):
        return F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)


class T5FeedForwardLayer(nn.Module):
    def __init__(self, c: T5StackConfig):
        super().__init__()
        self.act = T5GatedGelu(c)
        self.layer_norm = T5LayerNorm(c.d_model, c.eps)
        self.wo = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, x):
        return x + self.wo(self.act(self.layer_norm(x)))


class T5Block(nn.Module):
    def __init__(self, c: T5StackConfig, position_bias: bool):
        super().__init__()
        self.self_attention_layer = T5SelfAttentionLayer(c, position_bias)
        self.ff_layer = T5FeedForwardLayer(c)

    def forward(self, x, bias):
        return self.ff_layer(self.self_attention_layer(x, bias))


class T5EncoderStack(nn.Module):
    """Token ids B×L → hidden states B×L×d_model (the last layer, after the final norm)."""

    def __init__(self, c: T5StackConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.block = nn.ModuleList(T5Block(c, position_bias=i == 0) for i in range(c.layers))
        self.final_layer_norm = T5LayerNorm(c.d_model, c.eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        bias = self.block[0].self_attention_layer.self_attention.pe_encoding(input_ids.shape[1], input_ids.device)
        for block in self.block:  # block 0 computes the bias; every block adds the same one
            x = block(x, bias)
        return self.final_layer_norm(x)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The fixed 1×length×dim table (sin on even channels, cos on odd) added to the text stream in the fuser."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)
    return table[None]


def patch_tokens(vit: FaceViT, faces: torch.Tensor) -> torch.Tensor:
    """Aligned crops B×3×H×W in [0, 1] (the official ToTensor input: no mean or std), bilinear to 112 → the face
    ViT's 144 patch tokens, in the ViT's dtype."""
    pixels = F.interpolate(faces, size=(VIT_SIZE, VIT_SIZE), mode="bilinear", align_corners=False)
    return vit(pixels.to(next(vit.parameters()).dtype)).patch_tokens


# -- the fuser ----------------------------------------------------------------------------------------------------
class FaceSelfLayer(nn.Module):
    """The face stream's layer. The official fuser calls it through torch's checkpoint with (face, positions) as
    positional arguments, which puts the positions in an unused mask slot, and hands its batch-first tensor to a
    sequence-first attention: each face's 144 patches attend only to the same patch of the other faces in the batch.
    For one face (or copies of one face, as the official script batches them) that is attention over a single key:
    the value projection of each patch itself. facegen computes exactly that, per face — the published weights'
    behaviour, without mixing the people of a batch."""

    def __init__(self, dim: int, c: OfficialFuserConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, c.heads)
        self.linear1 = nn.Linear(dim, c.ffn)
        self.linear2 = nn.Linear(c.ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, face):
        b, n, d = face.shape
        alone = face.reshape(1, b * n, d)  # a sequence of one for every patch of every face
        face = self.norm1(face + self.self_attn(alone, alone, alone, need_weights=False)[0].reshape(b, n, d))
        return self.norm2(face + self.linear2(F.relu(self.linear1(face))))


class FaceT5FuserEncoder(nn.Module):
    def __init__(self, dim: int, c: OfficialFuserConfig):
        super().__init__()
        self.layers = nn.ModuleList(FaceSelfLayer(dim, c) for _ in range(c.layers))
        self.text_layers = nn.ModuleList(TextEnhancerLayer(dim, c) for _ in range(c.layers))
        self.fusion_layers = nn.ModuleList(BiAttentionBlock(dim, c) for _ in range(c.layers))

    def forward(self, text, text_pos, face):
        last = len(self.layers) - 1
        for i, (fusion, text_layer, face_layer) in enumerate(zip(self.fusion_layers, self.text_layers, self.layers)):
            face, text = fusion(face, text)
            text = text_layer(text, text_pos)
            if i < last:  # the last face update never reaches the text stream, the only output
                face = face_layer(face)
        return text


class FaceT5Fuser(nn.Module):
    """GroundingDINO's feature enhancer as FaceT5 builds it: bi-attention text↔face, a text self-attention with the
    sinusoidal positions, and a plain (not deformable) face self-attention layer; the text stream is the output."""

    def __init__(self, dim: int, c: OfficialFuserConfig):
        super().__init__()
        self.encoder = FaceT5FuserEncoder(dim, c)
        self.enc_output = nn.Linear(dim, dim)  # GroundingDINO's two-stage head: in the checkpoint, unused here
        self.enc_output_norm = nn.LayerNorm(dim)

    def forward(self, text, text_pos, face):
        return self.encoder(text, text_pos, face)


# -- the joint face + T5 encoder ----------------------------------------------------------------------------------
class FaceT5Encoder(nn.Module):
    """(T5 ids B×512, aligned faces B×3×H×W in [0, 1]) → the fused text stream, B×512×d_model."""

    def __init__(self, c: FaceT5Config):
        super().__init__()
        d = c.t5.d_model
        self.face_encoder = FaceViT(c.vit)
        self.t5_encoder = T5EncoderStack(c.t5)
        self.face_patch_proj = nn.Linear(c.vit.embed_dim, d)
        self.face_pos_proj = nn.Linear(c.vit.embed_dim, d)
        self.register_buffer("positional_embedding", sinusoidal_positions(c.t5.max_length, d))  # in the checkpoint
        self.fuser = FaceT5Fuser(d, c.fuser)

    def read_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """Aligned crops B×3×H×W in [0, 1] → the face ViT's patch tokens B×144×D (the identity a photo gives)."""
        return patch_tokens(self.face_encoder, faces)

    def fuse(self, t5_ids: torch.Tensor, face_tokens: torch.Tensor) -> torch.Tensor:
        face = self.face_patch_proj(face_tokens.to(self.face_patch_proj.weight.dtype))
        # face_pos_proj is in the checkpoint, but its output reaches nothing: the official face layers drop the
        # positions (see FaceSelfLayer)
        text = self.t5_encoder(t5_ids)
        text_pos = self.positional_embedding[:, : text.shape[1]].expand(len(text), -1, -1).to(text.dtype)
        return self.fuser(text, text_pos, face)

    def forward(self, t5_ids: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        return self.fuse(t5_ids, self.read_faces(faces))


class ClipL(nn.Module):
    """FLUX.1-dev's CLIP-L text encoder (transformers' CLIPTextModel, by its config) under `text_model`: the
    checkpoint was written by transformers 4, whose CLIPTextModel held its layers there (transformers 5 flattens
    them; the names below it are the same). Its pooler output (the end-of-text row) is FLUX's pooled input."""

    def __init__(self, c: ClipLConfig):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        self.text_model = CLIPTextModel(CLIPTextConfig(
            vocab_size=c.vocab_size, hidden_size=c.hidden, intermediate_size=c.intermediate,
            num_hidden_layers=c.layers, num_attention_heads=c.heads, max_position_embeddings=c.max_length,
            hidden_act=c.act, projection_dim=c.hidden, bos_token_id=0, eos_token_id=2, pad_token_id=1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_model(ids).pooler_output


class FaceT5FluxEncoder(ModelMixin):
    """The official `FaceT5FluxWrapper`: encoder_1 (CLIP-L) for the pooled conditioning, encoder_2 (FaceT5Encoder)
    for prompt_embeds. forward(clip_ids B×77, t5_ids B×512, faces) → (prompt_embeds B×512×4096, pooled B×768).

    It holds FLUX's two tokenizers (not modules: saved beside the weights), so `encode(prompts, face_tokens)` goes
    from text to FLUX's conditioning; `read_faces` turns aligned crops into the face tokens (the identity)."""

    def __init__(self, config: FaceT5Config | None = None, tokenizer=None, tokenizer_2=None):
        super().__init__()
        self.ft_config = config or FaceT5Config()
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.encoder_1 = ClipL(self.ft_config.clip_l)
        self.encoder_2 = FaceT5Encoder(self.ft_config)

    def forward(self, clip_ids: torch.Tensor, t5_ids: torch.Tensor, faces: torch.Tensor):
        pooled = self.encoder_1(clip_ids)
        return self.encoder_2(t5_ids, faces), pooled

    # -- text and faces in, FLUX's conditioning out ---------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLIP ids B×77, T5 ids B×max_length): each padded to its full length and truncated, as the official
        wrapper tokenizes. S* (optional: the face enters through the fuser) reads as "a person"."""
        from facegen.core.prompts import PERSON_WORDS, PLACEHOLDER

        prompts = [p.replace(PLACEHOLDER, PERSON_WORDS) for p in prompts]
        device = self.encoder_1.text_model.device

        def ids(tokenizer, length):
            return tokenizer(prompts, max_length=length, padding="max_length", truncation=True,
                             return_tensors="pt").input_ids.to(device)

        return ids(self.tokenizer, self.ft_config.clip_l.max_length), ids(self.tokenizer_2, self.ft_config.t5.max_length)

    def face_reader(self) -> FaceTokenReader:
        return FaceTokenReader(self.encoder_2.face_encoder, self.ft_config.face_crop)

    def read_faces(self, crops_uint8: np.ndarray) -> torch.Tensor:
        return self.face_reader()(crops_uint8)

    def encode(self, prompts: list[str], face_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts and B faces' tokens → (prompt_embeds B×max_length×d_model, pooled B×hidden)."""
        clip_ids, t5_ids = self.tokenize(prompts)
        return self.encoder_2.fuse(t5_ids, face_tokens.to(t5_ids.device)), self.encoder_1(clip_ids)

    def zero_face_tokens(self, n: int) -> torch.Tensor:
        """The negative's face: the all-zero crop (the official script's), read by the face ViT."""
        size = self.ft_config.face_crop
        return self.read_faces(np.zeros((n, size, size, 3), np.uint8))

    # -- saving and loading (facegen's export: config.json + model.safetensors + the tokenizers) ---------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **_ignored) -> None:
        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(d / "tokenizer")
        self.tokenizer_2.save_pretrained(d / "tokenizer_2")
        save_export(d, self, self.ft_config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, torch_dtype: torch.dtype | None = None, **_ignored):
        from transformers import AutoTokenizer, CLIPTokenizer

        d, config, _ = read_export(directory, FaceT5Config, "FaceT5 encoder", "model", weights=False)
        for sub in ("tokenizer", "tokenizer_2"):
            if not (d / sub).is_dir():
                raise ModelNotFound(f"{d} has no {sub}/: not a FaceT5 export (see `python -m facegen convert "
                                    "facet5-flux`)")
        from accelerate import init_empty_weights

        # No random initialisation of 6 B parameters: they are made empty and the file's tensors assigned to them
        # (in the file's dtype, one at a time); buffers are built as usual.
        with init_empty_weights(include_buffers=False):
            model = cls(config, CLIPTokenizer.from_pretrained(d / "tokenizer"),
                        AutoTokenizer.from_pretrained(d / "tokenizer_2"))
        load_export_weights(model, d)
        return (model.to(torch_dtype) if torch_dtype else model).eval()

    @classmethod
    def fresh(cls, config: FaceT5Config, text_encoder, tokenizer, tokenizer_2, text_encoder_2=None):
        """A new encoder from a FLUX base model's own parts: its CLIP-L as encoder_1, its T5 encoder (transformers'
        T5EncoderModel) as the T5 stack when given; the face ViT, projections and fuser random (seeded)."""
        torch.manual_seed(0)
        model = cls(config, tokenizer, tokenizer_2)
        model.encoder_2.face_encoder = fresh_face_vit(config)
        own = model.encoder_1.text_model.state_dict()
        given = text_encoder.state_dict()
        if {k: v.shape for k, v in own.items()} != {k: v.shape for k, v in given.items() if k in own}:
            raise ModelNotFound("the base model's CLIP-L text encoder does not have the sizes methods.facet5.encoder."
                                "clip_l gives")
        model.encoder_1.text_model.load_state_dict({k: given[k] for k in own}, strict=True)
        if text_encoder_2 is not None:
            model.encoder_2.t5_encoder.load_state_dict(t5_from_transformers(text_encoder_2.state_dict()), strict=True)
        return model.eval()


class FaceTokenReader(nn.Module):
    """The face side alone: aligned crops N×S×S×3 (uint8, the ArcFace template at S = face_crop) → the face ViT's
    patch tokens N×144×D. The official input is ToTensor's [0, 1] (no mean or std), bilinear to 112."""

    def __init__(self, vit: FaceViT, crop_size: int):
        super().__init__()
        self.vit, self.crop_size = vit, crop_size

    @torch.no_grad()
    def forward(self, crops_uint8: np.ndarray) -> torch.Tensor:
        p = next(self.vit.parameters())
        faces = torch.from_numpy(np.ascontiguousarray(crops_uint8)).permute(0, 3, 1, 2).to(p.device, torch.float32)
        return patch_tokens(self.vit, faces / 255.0)


def fresh_face_vit(config: FaceT5Config) -> FaceViT:
    """A fresh encoder's face ViT (seeded alone, so the face replica builds the same one without the rest)."""
    torch.manual_seed(1)
    return FaceViT(config.vit)


def load_face_reader(directory: str | os.PathLike | None, config: FaceT5Config) -> FaceTokenReader:
    """The face ViT of an export (read alone from its model.safetensors), or a fresh encoder's."""
    if directory is None:
        return FaceTokenReader(fresh_face_vit(config).eval(), config.face_crop)
    from safetensors import safe_open

    d, saved, _ = read_export(directory, FaceT5Config, "FaceT5 encoder", "model", weights=False)
    prefix = "encoder_2.face_encoder."
    vit = FaceViT(saved.vit)
    with safe_open(str(Path(d) / "model.safetensors"), framework="pt") as f:
        vit.load_state_dict({k[len(prefix):]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)})
    return FaceTokenReader(vit.eval(), saved.face_crop)


def t5_from_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' T5EncoderModel names → FlashT5's (the stack above): the same weights, renamed."""
    out = {}
    for key, value in state.items():
        if key == "shared.weight":
            continue  # tied to encoder.embed_tokens
        k = key.removeprefix("encoder.")
        for theirs, ours in ((".layer.0.SelfAttention.relative_attention_bias.", ".self_attention_layer."
                              "self_attention.pe_encoding.relative_attention_bias."),
                             (".layer.0.SelfAttention.q.", ".self_attention_layer.self_attention.Wq."),
                             (".layer.0.SelfAttention.k.", ".self_attention_layer.self_attention.Wk."),
                             (".layer.0.SelfAttention.v.", ".self_attention_layer.self_attention.Wv."),
                             (".layer.0.SelfAttention.o.", ".self_attention_layer.self_attention.o."),
                             (".layer.0.layer_norm.", ".self_attention_layer.layer_norm."),
                             (".layer.1.DenseReluDense.wi_0.", ".ff_layer.act.wi_0."),
                             (".layer.1.DenseReluDense.wi_1.", ".ff_layer.act.wi_1."),
                             (".layer.1.DenseReluDense.wo.", ".ff_layer.wo."),
                             (".layer.1.layer_norm.", ".ff_layer.layer_norm.")):
            k = k.replace(theirs, ours)
        out[k] = value
    return out
