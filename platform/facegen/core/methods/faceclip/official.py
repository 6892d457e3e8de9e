"""ByteDance's published FaceCLIP-SDXL encoder, written for facegen: state-dict names and shapes are exactly those of
`face_clip_encoder.pt` (after its "model." prefix), so the published weights load strictly; the outputs match the
official code (tests/fixtures/faceclip_official, made from bytedance/FaceCLIP @ a984887).

Two branches, `face_clip_l` (open_clip ViT-L-14-quickgelu text tower, 768) and `face_clip_g` (ViT-bigG-14, 1280).
Reading one branch top to bottom:
  1. face: an ArcFace-aligned crop in [0, 1] (no mean/std), resized to 112 → the branch's face ViT → identity (512)
     and 144 patch tokens;
  2. prompt: "Photo of a id person. " + prompt (only when there is a face), open_clip's tokenizer; the embedding of
     the prefix's "id" token is replaced by proj1(normalised identity);
  3. the frozen text tower; its LAST layer after ln_final is read (not SDXL's penultimate); pooled = the
     end-of-text row, before the text projection;
  4. the fuser: 6 GroundingDINO encoder layers, each a text↔face bi-attention, a text self-attention ("enhancer")
     and a multi-scale deformable self-attention over the 12×12 face grid (plain PyTorch: one level, 144 queries);
     the output is the text stream.
prompt_embeds = cat(fused L, fused G) → B×77×2048; pooled = G's → B×1280. The negative: an all-zero face, no
prefix. Unused at inference but in the checkpoint (kept so it loads strictly): logit_scale/bias, text_projection,
the fuser's enc_output(_norm).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from torch import nn

from facegen.core.methods.faceclip.config import OfficialFaceCLIPConfig, OfficialFuserConfig, OfficialTextTowerConfig
from facegen.core.models.export import load_export_weights, read_export, save_export
from facegen.core.models.face_vit import FaceViT
from facegen.core.prompts import PERSON_WORDS, PLACEHOLDER

BRANCHES = ("face_clip_l", "face_clip_g")
VIT_SIZE = 112


# -- the text tower (open_clip's names) ---------------------------------------------------------------------------
class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, quick_gelu: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU() if quick_gelu else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x, causal_mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=causal_mask.to(h.dtype))[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    def __init__(self, c: OfficialTextTowerConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(c.width, c.heads, c.quick_gelu) for _ in range(c.layers))

    def forward(self, x, causal_mask):
        for block in self.resblocks:
            x = block(x, causal_mask)
        return x


# -- the fuser (GroundingDINO's encoder, names as there) ----------------------------------------------------------
class MultiScaleDeformableAttention(nn.Module):
    """Deformable self-attention over one level (the 12×12 face grid): each query samples `points` bilinear
    locations per head around its reference point, weighted by a softmax. grid_sample does what GroundingDINO's
    CUDA kernel does; with 144 queries it is not worth a compiled extension."""

    def __init__(self, dim: int, heads: int, points: int):
        super().__init__()
        self.heads, self.points = heads, points
        self.sampling_offsets = nn.Linear(dim, heads * points * 2)
        self.attention_weights = nn.Linear(dim, heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(self, query, value, reference_points, grid: tuple[int, int]):
        b, n, d = value.shape
        h, w = grid
        hd = d // self.heads
        value = self.value_proj(value).transpose(1, 2).reshape(b * self.heads, hd, h, w)
        offsets = self.sampling_offsets(query).view(b, n, self.heads, self.points, 2)
        weights = self.attention_weights(query).view(b, n, self.heads, self.points).softmax(-1)
        locations = reference_points[:, :, None, None, :] + offsets / offsets.new_tensor([w, h])
        grids = (2 * locations - 1).transpose(1, 2).flatten(0, 1)  # (b·heads)×n×points×2 in [-1, 1]
        sampled = F.grid_sample(value, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = (sampled * weights.transpose(1, 2).reshape(b * self.heads, 1, n, self.points)).sum(-1)
        return self.output_proj(out.view(b, d, n).transpose(1, 2))


class DeformableEncoderLayer(nn.Module):
    """Face stream: deformable self-attention, then FFN; post-norm."""

    def __init__(self, dim: int, c: OfficialFuserConfig):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dim, c.heads, c.points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, c.ffn)
        self.linear2 = nn.Linear(c.ffn, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, face, pos, reference_points, grid):
        face = self.norm1(face + self.self_attn(face + pos, face, reference_points, grid))
        return self.norm2(face + self.linear2(F.relu(self.linear1(face))))


class TextEnhancerLayer(nn.Module):
    """Text stream: self-attention with positions on queries and keys, then FFN; post-norm."""

    def __init__(self, dim: int, c: OfficialFuserConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, c.heads // 2, batch_first=True)
        self.linear1 = nn.Linear(dim, c.ffn // 2)
        self.linear2 = nn.Linear(c.ffn // 2, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, text, pos):
        q = text + pos
        text = self.norm1(text + self.self_attn(q, q, text, need_weights=False)[0])
        return self.norm2(text + self.linear2(F.relu(self.linear1(text))))


class BiMultiHeadAttention(nn.Module):
    """Face queries attend to text and text queries attend to face, from one shared score matrix."""

    def __init__(self, dim: int, inner: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (inner // heads) ** -0.5
        self.v_proj = nn.Linear(dim, inner)
        self.l_proj = nn.Linear(dim, inner)
        self.values_v_proj = nn.Linear(dim, inner)
        self.values_l_proj = nn.Linear(dim, inner)
        self.out_v_proj = nn.Linear(inner, dim)
        self.out_l_proj = nn.Linear(inner, dim)

    def _heads(self, x):
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, face, text):
        scores = self._heads(self.v_proj(face) * self.scale) @ self._heads(self.l_proj(text)).transpose(-1, -2)
        # GroundingDINO's fp16 guards: shift by the maximum and clamp to ±50000 before each softmax. The official
        # code shifts by the whole batch's maximum; per sample it is the same unless a clamp bites, and a request's
        # image then never depends on what it was batched with.
        scores = (scores - scores.amax(dim=(1, 2, 3), keepdim=True)).clamp(-50000, 50000)
        scores_l = scores.transpose(-1, -2)
        scores_l = (scores_l - scores_l.amax(dim=-1, keepdim=True)).clamp(-50000, 50000)
        out_v = scores.softmax(-1) @ self._heads(self.values_l_proj(text))
        out_l = scores_l.softmax(-1) @ self._heads(self.values_v_proj(face))
        merge = lambda x: x.transpose(1, 2).flatten(2)  # noqa: E731
        return self.out_v_proj(merge(out_v)), self.out_l_proj(merge(out_l))


class BiAttentionBlock(nn.Module):
    """Both streams layer-normed, then each plus a layer-scaled (γ) update from the other."""

    def __init__(self, dim: int, c: OfficialFuserConfig):
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(dim)
        self.layer_norm_l = nn.LayerNorm(dim)
        self.attn = BiMultiHeadAttention(dim, c.ffn // 2, c.heads // 2)
        self.gamma_v = nn.Parameter(torch.full((dim,), 1e-4))
        self.gamma_l = nn.Parameter(torch.full((dim,), 1e-4))

    def forward(self, face, text):
        face, text = self.layer_norm_v(face), self.layer_norm_l(text)  # v: vision (the face), l: language
        delta_face, delta_text = self.attn(face, text)
        return face + self.gamma_v * delta_face, text + self.gamma_l * delta_text


class FuserEncoder(nn.Module):
    def __init__(self, dim: int, c: OfficialFuserConfig):
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(dim, c) for _ in range(c.layers))
        self.text_layers = nn.ModuleList(TextEnhancerLayer(dim, c) for _ in range(c.layers))
        self.fusion_layers = nn.ModuleList(BiAttentionBlock(dim, c) for _ in range(c.layers))

    def forward(self, text, text_pos, face, face_pos, grid: tuple[int, int]):
        h, w = grid
        ys, xs = torch.meshgrid(torch.arange(h, device=face.device) + 0.5, torch.arange(w, device=face.device) + 0.5,
                                indexing="ij")
        reference_points = torch.stack([xs.flatten() / w, ys.flatten() / h], -1).to(face.dtype).expand(len(face), -1, -1)
        last = len(self.layers) - 1
        for i, (fusion, text_layer, face_layer) in enumerate(zip(self.fusion_layers, self.text_layers, self.layers)):
            face, text = fusion(face, text)
            text = text_layer(text, text_pos)
            if i < last:  # the last face update never reaches the text stream, the only output
                face = face_layer(face, face_pos, reference_points, grid)
        return text


class TextFaceFuser(nn.Module):
    def __init__(self, dim: int, c: OfficialFuserConfig):
        super().__init__()
        self.encoder = FuserEncoder(dim, c)
        self.enc_output = nn.Linear(dim, dim)  # GroundingDINO's two-stage head: in the checkpoint, unused here
        self.enc_output_norm = nn.LayerNorm(dim)

    def forward(self, text, text_pos, face, face_pos, grid):
        return self.encoder(text, text_pos, face, face_pos, grid)


# -- one branch ---------------------------------------------------------------------------------------------------
class OfficialBranch(nn.Module):
    def __init__(self, tower: OfficialTextTowerConfig, config: OfficialFaceCLIPConfig):
        super().__init__()
        d = tower.width
        self.transformer = TextTransformer(tower)
        self.token_embedding = nn.Embedding(tower.vocab_size, d)
        self.positional_embedding = nn.Parameter(torch.empty(tower.context_length, d).normal_(std=0.01))
        self.ln_final = nn.LayerNorm(d)
        self.text_projection = nn.Parameter(torch.empty(d, d).normal_(std=d ** -0.5))
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.face_encoder = FaceViT(config.vit)
        v = config.vit
        self.proj1 = nn.Linear(v.num_features, d)
        self.face_patch_proj = nn.Linear(v.embed_dim, d)
        self.face_pos_proj = nn.Linear(v.embed_dim, d)
        self.text_embed_proj = nn.Linear(d, d)
        self.text_pos_proj = nn.Linear(d, d)
        self.fuser = TextFaceFuser(d, config.fuser)
        side = v.img_size // v.patch_size
        self.grid = (side, side)

    def forward(self, ids, id_mask, identity, patch_tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """ids B×77, id_mask B×77 (the "id" slot), identity B×512 (normalised), patch_tokens B×144×Dv →
        (fused text B×77×D, pooled B×D)."""
        x = self.token_embedding(ids)
        face_token = self.proj1(identity.to(x.dtype))
        x = torch.where(id_mask[..., None], face_token[:, None, :].to(x.dtype), x)
        n = ids.shape[1]
        causal_mask = torch.full((n, n), float("-inf"), device=x.device).triu(1)
        x = self.transformer(x + self.positional_embedding, causal_mask)
        x = self.ln_final(x)
        pooled = x[torch.arange(len(x), device=x.device), ids.argmax(-1)]  # end of text: the largest id
        text = self.text_embed_proj(x)
        text_pos = self.text_pos_proj(self.positional_embedding)[None].expand(len(x), -1, -1)
        face = self.face_patch_proj(patch_tokens.to(x.dtype))
        face_pos = self.face_pos_proj(self.face_encoder.pos_embed).expand(len(x), -1, -1)
        with _fp32_region(x.device):  # the official code runs its fuser in fp32 whatever the autocast around it
            fused = self.fuser(text.float(), text_pos.float(), face.float(), face_pos.float(), self.grid)
        return fused, pooled


def _fp32_region(device: torch.device):
    return torch.autocast(device.type, enabled=False) if device.type == "cuda" else contextlib.nullcontext()


class OfficialFaceReader(nn.Module):
    """Aligned face crops (uint8, face_crop px) → the two branches' face conditions; the face ViTs only."""

    def __init__(self, vit_l: FaceViT, vit_g: FaceViT, face_crop: int):
        super().__init__()
        self.vits = nn.ModuleList([vit_l, vit_g])
        self.crop_size = face_crop

    @staticmethod
    def pixels(faces_uint8: torch.Tensor) -> torch.Tensor:
        """N×H×W×3 uint8 → N×3×112×112 in [0, 1]: ToTensor, then a bilinear resize (align_corners=False), as the
        official pipeline feeds its ViT."""
        x = faces_uint8.permute(0, 3, 1, 2).float() / 255.0
        return F.interpolate(x, size=(VIT_SIZE, VIT_SIZE), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, faces_uint8: torch.Tensor, recognizer_embeddings: torch.Tensor | None = None):
        """→ (face_embedding N×2×512, face_tokens N×2×144×D): each branch's normalised identity and patch tokens.
        The recognizer's own embedding is not used: each branch reads the face with its own ViT."""
        p = next(self.parameters())
        return read_faces(list(self.vits), self.pixels(faces_uint8).to(p.device, p.dtype))


def read_faces(vits, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    identities, tokens = [], []
    for vit in vits:
        out = vit(pixels)
        identities.append(F.normalize(out.identity, dim=-1))
        tokens.append(out.patch_tokens)
    return torch.stack(identities, 1), torch.stack(tokens, 1)


class OfficialFaceCLIPEncoder(ModelMixin):
    """(prompts, face condition) → SDXL's (prompt_embeds, pooled), as ByteDance's FaceCLIP_L_G_Wrapper."""

    Config = OfficialFaceCLIPConfig
    condition_dims = (2, 3)  # one face: face_embedding 2×512, face_tokens 2×144×D (a row per branch)

    def __init__(self, config: OfficialFaceCLIPConfig):
        super().__init__()
        from open_clip.tokenizer import SimpleTokenizer

        self.fc_config = config
        self.face_clip_l = OfficialBranch(config.tower_l, config)
        self.face_clip_g = OfficialBranch(config.tower_g, config)
        self.tokenizer = SimpleTokenizer(context_length=config.tower_l.context_length)
        self.id_token = self.tokenizer.encode(config.id_word)[0]
        # The "id" slot is looked for within the prefix only: start-of-text and the prefix's tokens (7 positions).
        self.prefix_len = 1 + len(self.tokenizer.encode(config.prefix))
        self.requires_grad_(False)

    @property
    def branches(self) -> tuple[OfficialBranch, OfficialBranch]:
        return self.face_clip_l, self.face_clip_g

    @property
    def _device(self):
        return self.face_clip_l.proj1.weight.device

    def _autocast(self):
        dev = self._device
        if self.fc_config.autocast and dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- faces -----------------------------------------------------------------------------------------------------
    def face_reader(self) -> OfficialFaceReader:
        return OfficialFaceReader(self.face_clip_l.face_encoder, self.face_clip_g.face_encoder, self.fc_config.face_crop)

    @torch.no_grad()
    def zero_condition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The all-black face the official negative reads (its ViT outputs; unbatched)."""
        e, t = self.read_pixels(torch.zeros(1, 3, VIT_SIZE, VIT_SIZE, device=self._device))
        return e[0], t[0]

    def read_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×3×112×112 in [0, 1] → (B×2×512, B×2×144×D)."""
        with self._autocast():
            return read_faces([b.face_encoder for b in self.branches], pixels.to(self._device))

    def face_condition(self, faces: torch.Tensor, face_embedding: torch.Tensor | None = None):
        """Training batches: aligned faces in [-1, 1] at any size → this encoder's face condition."""
        pixels = F.interpolate((faces.float() + 1) / 2, size=(VIT_SIZE, VIT_SIZE), mode="bilinear", align_corners=False)
        return self.read_pixels(pixels)

    # -- prompts ---------------------------------------------------------------------------------------------------
    def tokenize(self, prompts: list[str], with_face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [f"{self.fc_config.prefix} {p}" if f else p for p, f in zip(prompts, with_face.tolist())]
        ids = self.tokenizer(texts).to(self._device)
        in_prefix = torch.arange(ids.shape[1], device=ids.device) < self.prefix_len
        id_mask = (ids == self.id_token) & in_prefix & with_face.to(ids.device)[:, None]
        return ids, id_mask

    def forward(self, prompts: list[str], face_embedding: torch.Tensor, face_tokens: torch.Tensor,
                with_face: bool | torch.Tensor = True) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts (B), face_embedding B×2×512, face_tokens B×2×144×D, with_face (B or one bool; False: no prefix,
        the official negative) → (prompt_embeds B×77×(D_L+D_G), pooled B×D_G)."""
        prompts = [p.replace(PLACEHOLDER, PERSON_WORDS) for p in prompts]
        with_face = torch.as_tensor(with_face, dtype=torch.bool).expand(len(prompts)).cpu()
        ids, id_mask = self.tokenize(prompts, with_face)
        fused, pooled = [], []
        with self._autocast():
            for i, branch in enumerate(self.branches):
                f, p = branch(ids, id_mask, face_embedding[:, i].to(self._device), face_tokens[:, i].to(self._device))
                fused.append(f)
                pooled.append(p)
        return torch.cat(fused, dim=-1).float(), pooled[1].float()

    def encode_negative(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        e, t = self.zero_condition()
        b = len(prompts)
        return self(prompts, e.expand(b, *e.shape), t.expand(b, *t.shape), with_face=False)

    def encode_batch(self, prompts: list[str], faces: torch.Tensor, face_embedding: torch.Tensor,
                     keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: aligned faces in [-1, 1] (the recognizer's embeddings are not read); rows where `keep` is False
        get the unconditional input the official negative uses: a black face, no prefix, an empty prompt."""
        black = torch.full_like(faces, -1.0)
        faces = torch.where(keep.to(faces.device)[:, None, None, None], faces, black)
        e, t = self.face_condition(faces)
        return self([p if k else "" for p, k in zip(prompts, keep.tolist())], e, t, with_face=keep)

    # -- training --------------------------------------------------------------------------------------------------
    def set_trainable(self, train_text: bool = False, train_vit: bool = False):
        """The projections and the fusers train; the text towers and the face ViTs only when asked."""
        self.requires_grad_(True)
        for b in self.branches:
            for m in (b.transformer, b.token_embedding, b.ln_final):
                m.requires_grad_(train_text)
            b.positional_embedding.requires_grad_(train_text)
            b.face_encoder.requires_grad_(train_vit)
            for p in (b.text_projection, b.logit_scale, b.logit_bias, *b.fuser.enc_output.parameters(),
                      *b.fuser.enc_output_norm.parameters()):
                p.requires_grad_(False)  # unused at inference: no gradient would reach them
        return self

    # -- persistence -----------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **_ignored) -> None:
        save_export(save_directory, self, self.fc_config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, torch_dtype: torch.dtype | None = None, **_ignored):
        d, config, _ = read_export(directory, OfficialFaceCLIPConfig, "FaceCLIP encoder", "model", weights=False)
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device="cpu")  # no random init of 1.5 B weights that are overwritten next
        load_export_weights(model, d)
        return (model.to(torch_dtype) if torch_dtype else model).eval()


def exported_face_reader(directory: str | os.PathLike) -> OfficialFaceReader:
    """The two face ViTs of a converted checkpoint, read alone (no text towers: what a face-encoding replica needs)."""
    from safetensors import safe_open

    d, config, _ = read_export(directory, OfficialFaceCLIPConfig, "FaceCLIP encoder", "model", weights=False)
    vits = []
    with safe_open(str(Path(d) / "model.safetensors"), framework="pt") as f:
        for branch in BRANCHES:
            prefix = f"{branch}.face_encoder."
            vit = FaceViT(config.vit)
            vit.load_state_dict({k[len(prefix):]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)})
            vits.append(vit.eval())
    return OfficialFaceReader(vits[0], vits[1], config.face_crop)
