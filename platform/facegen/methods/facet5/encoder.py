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

import torch
import torch.nn.functional as F
from torch import nn

from facegen.methods.faceclip.config import OfficialFuserConfig
from facegen.methods.faceclip.official import VIT_SIZE, BiAttentionBlock, TextEnhancerLayer
from facegen.methods.facet5.config import ClipLConfig, FaceT5Config, T5StackConfig
from facegen.models.face_vit import FaceViT


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

    def forward(self, t5_ids: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        pixels = F.interpolate(faces, size=(VIT_SIZE, VIT_SIZE), mode="bilinear", align_corners=False)
        patches = self.face_encoder(pixels.to(self.face_patch_proj.weight.dtype)).patch_tokens
        face = self.face_patch_proj(patches)
        # face_pos_proj is in the checkpoint, but its output reaches nothing: the official face layers drop the
        # positions (see FaceSelfLayer)
        text = self.t5_encoder(t5_ids)
        text_pos = self.positional_embedding[:, : text.shape[1]].expand(len(text), -1, -1).to(text.dtype)
        return self.fuser(text, text_pos, face)


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
            hidden_act="quick_gelu", projection_dim=c.hidden, bos_token_id=0, eos_token_id=2, pad_token_id=1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_model(ids).pooler_output


class FaceT5FluxEncoder(nn.Module):
    """The official `FaceT5FluxWrapper`: encoder_1 (CLIP-L) for the pooled conditioning, encoder_2 (FaceT5Encoder)
    for prompt_embeds. forward(clip_ids B×77, t5_ids B×512, faces) → (prompt_embeds B×512×4096, pooled B×768)."""

    def __init__(self, config: FaceT5Config | None = None):
        super().__init__()
        self.config = config or FaceT5Config()
        self.encoder_1 = ClipL(self.config.clip_l)
        self.encoder_2 = FaceT5Encoder(self.config)

    def forward(self, clip_ids: torch.Tensor, t5_ids: torch.Tensor, faces: torch.Tensor):
        pooled = self.encoder_1(clip_ids)
        return self.encoder_2(t5_ids, faces), pooled
