"""FaceCLIP: one encoder that turns (face, prompt) into SDXL's conditioning, replacing its two text encoders.

Per branch (CLIP-L 768 and bigG 1280, initialised from SDXL's own `text_encoder` / `text_encoder_2`):
  1. the prompt is prefixed "photo of a id person." and the token embedding of "id" is replaced by a learned
     projection of the face_embedding (the face stack's recognizer vector: 512-d ArcFace, or 128-d dlib);
  2. the text tower runs; SDXL reads its penultimate hidden states;
  3. N fusion layers: text←face cross-attention (face = the face ViT's patch tokens), face←text cross-attention and
     text self-attention, each update scaled by tanh(gate) with the gate starting at zero.
prompt_embeds = concat(branch states) → B×77×(768+1280); pooled = bigG's pooled output plus a gated projection of
its fused end-of-text state → B×1280. At initialisation (gates zero) this is exactly SDXL's conditioning for the
prefixed prompt with "id" replaced, so training starts from SDXL and learns to add the face.

`alignment_loss` pulls the joint pooled feature towards the face_embedding, the plain prompt's text embedding and the
CLIP image embedding of the target with sigmoid-contrastive terms (learnable temperature and bias, as SigLIP).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from torch import nn

from facegen.core.methods.faceclip.config import FaceCLIPEncoderConfig, exported_architecture
from facegen.core.models.export import export_config, load_export_weights, read_export, save_export
from facegen.core.models.face_vit import FaceViT, faces_to_tensor, load_arcface_checkpoint
from facegen.core.models.tokens import token_embedding_override, tokenize_with_placeholders
from facegen.core.prompts import PERSON_WORDS, PLACEHOLDER

TOWERS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))


def prefixed_prompt(config: FaceCLIPEncoderConfig, prompt: str) -> str:
    """The prompt as FaceCLIP's text towers read it: the prefix with its id word as the slot ("S*"), then the prompt
    with any S* read as "a person" (the face is in the slot)."""
    words = [PLACEHOLDER if w == config.id_word else w for w in config.prefix.split()]
    return " ".join(words) + " " + prompt.replace(PLACEHOLDER, PERSON_WORDS)


class FusionLayer(nn.Module):
    """Bidirectional text↔face cross-attention + text self-attention, each gated (tanh, zero at start)."""

    def __init__(self, dim: int):
        super().__init__()
        heads = max(1, dim // 64)
        self.norm_t1, self.norm_f1 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.text_from_face = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_t2, self.norm_f2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.face_from_text = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_t3 = nn.LayerNorm(dim)
        self.text_self = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.gates = nn.Parameter(torch.zeros(3))

    def forward(self, text: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.tanh(self.gates)
        f = self.norm_f1(face)
        text = text + g[0] * self.text_from_face(self.norm_t1(text), f, f, need_weights=False)[0]
        t = self.norm_t2(text)
        face = face + g[1] * self.face_from_text(self.norm_f2(face), t, t, need_weights=False)[0]
        t = self.norm_t3(text)
        text = text + g[2] * self.text_self(t, t, t, need_weights=False)[0]
        return text, face


class Branch(nn.Module):
    """One text tower with the face_embedding injected at the "id" slot, and fusion."""

    def __init__(self, text_encoder, face_embedding_dim: int, face_dim: int, layers: int):
        super().__init__()
        self.text_encoder = text_encoder
        width = text_encoder.config.hidden_size
        self.id_proj = nn.Linear(face_embedding_dim, width)
        self.face_proj = nn.Linear(face_dim, width)
        self.fusion = nn.ModuleList(FusionLayer(width) for _ in range(layers))

    def forward(self, ids, id_mask, face_embedding, face_tokens):
        slot_values = self.id_proj(face_embedding).repeat_interleave(id_mask.sum(1), 0)
        with token_embedding_override(self.text_encoder, id_mask, slot_values):
            out = self.text_encoder(ids, output_hidden_states=True)
        text, face = out.hidden_states[-2], self.face_proj(face_tokens)  # SDXL reads the penultimate layer
        for layer in self.fusion:
            text, face = layer(text, face)
        return text, out


def sigmoid_contrastive(a: torch.Tensor, b: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SigLIP loss: every (i, j) pair is a binary match/no-match decision; pairs i == j match."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T * log_scale.exp() + bias
    labels = 2 * torch.eye(len(a), device=a.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / len(a)


class FaceReader(nn.Module):
    """Aligned face crops (uint8, vit.img_size px) + the recognizer's embeddings → this encoder's face condition;
    the face ViT only (what a face-encoding replica loads)."""

    def __init__(self, vit: FaceViT):
        super().__init__()
        self.vit = vit
        self.crop_size = vit.config.img_size

    @torch.no_grad()
    def forward(self, faces_uint8: torch.Tensor, recognizer_embeddings: torch.Tensor):
        """→ (face_embedding N×E: the recognizer's, face_tokens N×144×D: the ViT's patch tokens)."""
        p = next(self.vit.parameters())
        tokens = self.vit(faces_to_tensor(faces_uint8.numpy()).to(p.device, p.dtype)).patch_tokens
        return recognizer_embeddings.float(), tokens


class FaceCLIPEncoder(ModelMixin):
    Config = FaceCLIPEncoderConfig
    condition_dims = (1, 2)  # one face: face_embedding E (face_embedding_dim), face_tokens 144×D

    def __init__(self, config: FaceCLIPEncoderConfig, text_encoder, text_encoder_2, tokenizer, tokenizer_2):
        super().__init__()
        c = self.fc_config = config
        if c.id_word not in c.prefix.split():
            raise ValueError(f"faceclip.prefix '{c.prefix}' must contain the word '{c.id_word}'")
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.vit = FaceViT(c.vit)  # first, so a fresh encoder's ViT equals `fresh_face_vit(config)`
        self.branch_1 = Branch(text_encoder, c.face_embedding_dim, c.vit.embed_dim, c.fusion_layers)
        self.branch_2 = Branch(text_encoder_2, c.face_embedding_dim, c.vit.embed_dim, c.fusion_layers)
        pooled = text_encoder_2.config.projection_dim
        self.pool_proj = nn.Linear(text_encoder_2.config.hidden_size, pooled)
        self.pool_gate = nn.Parameter(torch.zeros(()))
        self.face_head = nn.Linear(pooled, c.face_embedding_dim)
        self.text_head = nn.Linear(pooled, pooled)
        self.image_head = nn.Linear(pooled, c.clip_embed_dim)
        self.log_scales = nn.Parameter(torch.full((3,), float(torch.log(torch.tensor(10.0)))))
        self.biases = nn.Parameter(torch.full((3,), -10.0))
        self.set_trainable()

    def set_trainable(self, train_text: bool = False, train_vit: bool = False):
        """New layers train; the text towers and the face ViT only when asked (methods.faceclip.train)."""
        self.requires_grad_(True)
        for branch in (self.branch_1, self.branch_2):
            branch.text_encoder.requires_grad_(train_text)
        self.vit.requires_grad_(train_vit)
        return self

    @classmethod
    def from_sdxl(cls, config: FaceCLIPEncoderConfig, text_encoder, text_encoder_2, tokenizer, tokenizer_2):
        """A fresh encoder whose text towers are SDXL's own (seeded new layers; face ViT from its checkpoint)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = cls(config, text_encoder, text_encoder_2, tokenizer, tokenizer_2)
        if config.vit.weights:
            load_arcface_checkpoint(model.vit, config.vit.weights)
        return model.eval()

    # -- encoding ----------------------------------------------------------------------------------------------
    @property
    def _device(self):
        return self.pool_gate.device

    def encode_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """B×3×112×112 aligned faces in [-1, 1] → B×N×D patch tokens."""
        return self.vit(faces.to(self._device, self.pool_gate.dtype)).patch_tokens

    def face_reader(self) -> FaceReader:
        return FaceReader(self.vit)

    @torch.no_grad()
    def zero_condition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The all-zero face (a zero embedding, the ViT's tokens of a zero image): the negative's face."""
        size = self.fc_config.vit.img_size
        tokens = self.encode_faces(torch.zeros(1, 3, size, size))[0]
        return torch.zeros(self.fc_config.face_embedding_dim, device=tokens.device), tokens

    def encode_negative(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The negative (and unconditional) conditioning: the negative prompts with the zero face."""
        e, t = self.zero_condition()
        b = len(prompts)
        return self(prompts, e.expand(b, *e.shape), t.expand(b, *t.shape))

    def encode_batch(self, prompts: list[str], faces: torch.Tensor, face_embedding: torch.Tensor,
                     keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: aligned faces in [-1, 1] and recognizer embeddings; rows where `keep` is False are dropped to
        the unconditional input (zero face, empty prompt) for classifier-free guidance."""
        k = keep.to(faces.device).float()
        prompts = [p if kept else "" for p, kept in zip(prompts, keep.tolist())]
        faces, face_embedding = faces * k[:, None, None, None], face_embedding * k[:, None]
        return self(prompts, face_embedding, self.encode_faces(faces))

    def prefixed(self, prompt: str) -> str:
        """The prompt as the text towers read it, with the "id" slot marked."""
        return prefixed_prompt(self.fc_config, prompt)

    def _tokenize(self, tokenizer, prompts):
        rows, mask_rows = [], []
        for p in prompts:
            ids, slots = tokenize_with_placeholders(tokenizer, self.prefixed(p), 1)
            rows.append(ids)
            mask_rows.append([i in slots for i in range(len(ids))])
        return torch.tensor(rows, device=self._device), torch.tensor(mask_rows, device=self._device)

    def forward(self, prompts: list[str], face_embedding: torch.Tensor, face_tokens: torch.Tensor):
        """prompts (B), face_embedding B×E, face_tokens B×N×D → (prompt_embeds B×77×(D1+D2), pooled B×P)."""
        face_embedding = face_embedding.to(self._device, self.pool_gate.dtype)
        face_tokens = face_tokens.to(self._device, self.pool_gate.dtype)
        ids_1, mask_1 = self._tokenize(self.tokenizer, prompts)
        ids_2, mask_2 = self._tokenize(self.tokenizer_2, prompts)
        text_1, _ = self.branch_1(ids_1, mask_1, face_embedding, face_tokens)
        text_2, out_2 = self.branch_2(ids_2, mask_2, face_embedding, face_tokens)
        eos = (ids_2 == self.tokenizer_2.eos_token_id).int().argmax(-1)
        fused_eos = text_2[torch.arange(len(prompts), device=text_2.device), eos]
        pooled = out_2.text_embeds + torch.tanh(self.pool_gate) * self.pool_proj(fused_eos)
        return torch.cat([text_1, text_2], dim=-1), pooled

    @torch.no_grad()
    def plain_text_embeds(self, prompts: list[str]) -> torch.Tensor:
        """bigG's pooled embedding of the prompt alone (no prefix, no face): the text alignment target."""
        te, tok = self.branch_2.text_encoder, self.tokenizer_2
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        return te(ids.input_ids.to(self._device)).text_embeds

    def alignment_loss(self, pooled, face_embedding, text_embeds, image_embeds,
                       weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[torch.Tensor, dict]:
        """Sigmoid-contrastive terms between the joint pooled feature and face / text / image targets, weighted by
        `weights` (face, text, image; methods.faceclip.train.*_weight)."""
        terms = {
            "face": (weights[0], self.face_head(pooled), face_embedding),
            "text": (weights[1], self.text_head(pooled), text_embeds),
            "image": (weights[2], self.image_head(pooled), image_embeds),
        }
        losses = {name: sigmoid_contrastive(pred, target.to(pred), self.log_scales[i], self.biases[i])
                  for i, (name, (w, pred, target)) in enumerate(terms.items()) if w > 0}
        total = sum(terms[name][0] * value for name, value in losses.items())
        return total, {name: float(v) for name, v in losses.items()}

    # -- persistence -------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **_ignored) -> None:
        """config.json + model.safetensors (every weight, text towers included) + the towers' configs/tokenizers."""
        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        for (te_name, tok_name), branch in zip(TOWERS, (self.branch_1, self.branch_2)):
            branch.text_encoder.config.save_pretrained(d / te_name)
            getattr(self, tok_name).save_pretrained(d / tok_name)
        save_export(d, self, self.fc_config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, torch_dtype: torch.dtype | None = None, **_ignored):
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        d, config, _ = read_export(directory, FaceCLIPEncoderConfig, "FaceCLIP encoder", "model", weights=False)
        towers = [CLIPTextModel(CLIPTextConfig.from_pretrained(d / "text_encoder")),
                  CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(d / "text_encoder_2"))]
        tokenizers = [CLIPTokenizer.from_pretrained(d / "tokenizer"), CLIPTokenizer.from_pretrained(d / "tokenizer_2")]
        model = cls(config, towers[0], towers[1], tokenizers[0], tokenizers[1])
        load_export_weights(model, d)
        return (model.to(torch_dtype) if torch_dtype else model).eval()


def architecture_of(directory: str | os.PathLike) -> str:
    """"facegen" or "official": which encoder class an export holds (its config.json's _class_name)."""
    from facegen.core.errors import ModelNotFound

    config = export_config(directory)
    if config is None:
        raise ModelNotFound(f"{directory} is not an exported FaceCLIP encoder (no config.json)")
    return exported_architecture(config)


def load_encoder(directory: str | os.PathLike, torch_dtype: torch.dtype | None = None):
    """An exported FaceCLIP encoder of either architecture: ours (a training job's export) or ByteDance's published
    one (`facegen convert faceclip-official`)."""
    if architecture_of(directory) == "official":
        from facegen.core.methods.faceclip.official import OfficialFaceCLIPEncoder

        return OfficialFaceCLIPEncoder.from_pretrained(directory, torch_dtype=torch_dtype)
    return FaceCLIPEncoder.from_pretrained(directory, torch_dtype=torch_dtype)


def load_face_reader(directory: str | os.PathLike | None, config: FaceCLIPEncoderConfig) -> nn.Module:
    """The face side alone (photos' aligned crops → face condition) of an export, or of a fresh encoder (ours: the
    official architecture has none, which FaceCLIPConfig.check_model says before this is reached)."""
    if directory is None:
        return FaceReader(fresh_face_vit(config))
    if architecture_of(directory) == "official":
        from facegen.core.methods.faceclip.official import exported_face_reader

        return exported_face_reader(directory)
    return FaceReader(exported_face_vit(directory))


def fresh_face_vit(config: FaceCLIPEncoderConfig) -> FaceViT:
    """The face ViT exactly as a fresh `FaceCLIPEncoder.from_sdxl(config, ...)` holds it (same seed, built first),
    without SDXL's text towers: what a replica that only encodes faces needs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        vit = FaceViT(config.vit)
    if config.vit.weights:
        load_arcface_checkpoint(vit, config.vit.weights)
    return vit.eval()


def exported_face_vit(directory: str | os.PathLike) -> FaceViT:
    """The face ViT of an exported FaceCLIP encoder, read alone (the text towers' weights are not loaded)."""
    from safetensors import safe_open

    d, config, _ = read_export(directory, FaceCLIPEncoderConfig, "FaceCLIP encoder", "model", weights=False)
    vit = FaceViT(config.vit)
    with safe_open(str(d / "model.safetensors"), framework="pt") as f:
        state = {k[len("vit."):]: f.get_tensor(k) for k in f.keys() if k.startswith("vit.")}
    vit.load_state_dict(state)
    return vit.eval()
