"""A face-recognition ViT whose parameter names match insightface's arcface_torch `VisionTransformer`.

Reading it top to bottom: 112×112 face → 9×9 patches (144 tokens, no class token) → `depth` pre-norm blocks
(ReLU6 MLP, no qkv bias) → LayerNorm → the arcface_torch "feature" head (flatten all tokens → Linear → BN →
Linear → BN) → the 512-d identity vector. Because the names match, arcface_torch's public vit_t / vit_s / vit_b / vit_l
checkpoints load with `load_arcface_checkpoint`. On top of arcface_torch it returns "taps": the mean-pooled hidden
state after chosen blocks, which is what DreamIdentity's M² encoder reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facegen.core.errors import ModelNotFound
from facegen.core.models.config import FaceViTConfig


@dataclass
class FaceViTOutput:
    taps: list[torch.Tensor]  # one B×D mean-pooled hidden state per tapped block
    patch_tokens: torch.Tensor  # B×N×D after the final norm
    identity: torch.Tensor  # B×num_features (not normalised, as arcface_torch returns it)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim**-0.5, as arcface_torch
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, dim: int):
        super().__init__()
        self.img_size = img_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"face ViT expects {self.img_size}×{self.img_size} aligned faces, got {tuple(x.shape[-2:])}")
        return self.proj(x).flatten(2).transpose(1, 2)


class FaceViT(nn.Module):
    Config = FaceViTConfig

    def __init__(self, config: FaceViTConfig):
        super().__init__()
        c = self.config = config
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.embed_dim)
        n = self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, n, c.embed_dim))
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.qkv_bias) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.embed_dim)
        self.feature = nn.Sequential(
            nn.Linear(c.embed_dim * n, c.embed_dim, bias=False),
            nn.BatchNorm1d(c.embed_dim, eps=2e-5),
            nn.Linear(c.embed_dim, c.num_features, bias=False),
            nn.BatchNorm1d(c.num_features, eps=2e-5),
        )
        # Unused at inference; kept so arcface_torch checkpoints (which hold it) load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def default_taps(self) -> list[int]:
        """1-based block indices at the quarters of the depth: 3, 6, 9, 12 for 12 blocks."""
        d = self.config.depth
        return sorted({max(1, round(d * q / 4)) for q in (1, 2, 3, 4)})

    def train(self, mode: bool = True):
        super().train(mode)
        # The head's BatchNorms keep their recognition-pretraining statistics: batches of one face must work.
        self.feature.eval()
        return self

    def forward(self, faces: torch.Tensor, taps: list[int] | None = None) -> FaceViTOutput:
        """faces: B×3×112×112 RGB in [-1, 1] (arcface_torch's normalisation)."""
        taps = taps or self.default_taps()
        x = self.patch_embed(faces) + self.pos_embed
        pooled = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i in taps:
                pooled.append(x.mean(dim=1))
        x = self.norm(x.float())
        identity = self.feature(x.reshape(x.shape[0], -1))
        return FaceViTOutput(taps=pooled, patch_tokens=x, identity=identity)


def faces_to_tensor(faces) -> torch.Tensor:
    """Aligned RGB uint8 faces (N×H×W×3 array or list of arrays) → N×3×H×W float in [-1, 1]."""
    import numpy as np

    arr = np.stack(list(faces)) if not isinstance(faces, np.ndarray) or faces.ndim == 3 else faces
    if arr.ndim == 3:
        arr = arr[None]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return t.div(255.0).sub(0.5).div(0.5)


def load_arcface_checkpoint(model: FaceViT, path: str | Path) -> None:
    """Load an arcface_torch ViT checkpoint (torch.save'd state dict, possibly DDP-prefixed, or safetensors)."""
    from facegen.core.pins import verify_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"face ViT checkpoint {path} not found")
    verify_file(path, model.config.weights_sha256, "the face ViT checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ModelNotFound(f"{path} does not match the face ViT config: {str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise ModelNotFound(
            f"{path} does not match the face ViT config ({model.config.embed_dim}-d, depth {model.config.depth}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
