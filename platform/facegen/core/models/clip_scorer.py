"""CLIP image/text embeddings through open_clip: the FaceCLIP alignment target and the CLIP-T score.

The tiny preset uses a small random model from a config shipped with facegen ("facegen-tiny-clip"); the real presets
name an open_clip model and its pretrained tag (e.g. ViT-L-14 / openai), which open_clip downloads or reads from a file.
"""
from __future__ import annotations

from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from facegen.core.errors import ModelNotFound
from facegen.core.models.config import TINY_CLIP as TINY
from facegen.core.models.config import ClipScorerConfig


def _register_tiny() -> None:
    import open_clip

    if TINY not in open_clip.list_models():
        open_clip.add_model_config(str(resources.files("facegen").joinpath("assets", "open_clip", f"{TINY}.json")))


class ClipScorer(nn.Module):
    Config = ClipScorerConfig

    def __init__(self, config: ClipScorerConfig | None = None):
        super().__init__()
        import open_clip

        self.config = c = config or ClipScorerConfig()
        _register_tiny()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(c.model, pretrained=c.pretrained)
            except Exception as e:  # unknown name, missing file, no network for a pretrained tag
                raise ModelNotFound(f"cannot load open_clip model '{c.model}' ({c.pretrained}): {e}") from None
        self.model, self.preprocess = model.eval().requires_grad_(False), preprocess
        self.tokenizer = open_clip.get_tokenizer(c.model)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else self.model.embed_dim

    @property
    def device(self) -> torch.device:
        """Where the model lives: inputs (preprocessed on the CPU) follow it, so callers may move the scorer to a GPU."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        """PIL images → B×E unit vectors."""
        batch = torch.stack([self.preprocess(img.convert("RGB")) for img in images]).to(self.device)
        return F.normalize(self.model.encode_image(batch).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(texts).to(self.device)).float(), dim=-1)

    def reading(self, prompt: str) -> str:
        """The prompt as it is scored: "S*" read as `person_words`."""
        from facegen.core.prompts import PLACEHOLDER

        return prompt.replace(PLACEHOLDER, self.config.person_words)

    def score(self, images, texts: list[str]) -> torch.Tensor:
        """CLIP-T: 100 × cosine(image, text), one per pair, floored at 0 as in CLIPScore."""
        return (100 * (self.embed_images(images) * self.embed_texts(texts)).sum(-1)).clamp(min=0)
