"""What `bench/learn.py` runs in the miniature world, through the project's real paths: the world's preset (the
tiny preset with its base models pointed at the world's), the encoders' training data as the jobs read it, and every
condition drawn by the real pipelines and scored (score.py).

    preset = write_preset(world, directory, cfg, guidance)
    write_job_inputs(world, directory, cfg)        # photos/<name>/*.png + names.txt for build_data
    ev = Evaluator(world, preset, analyzer, cfg)
    images = ev.draw(ev.pipeline("dreamidentity", model), ev.encoder_identities(pipe, names), PLAIN_PROMPT)

Conditions (each drawn with the same seeds, so they differ only in the identity):
  fresh      the untrained encoder given the identity's input view
  trained    the trained encoder given the input view
  ceiling    the identity's true code through the same injection path (M²'s S* slots; FaceCLIP's id slot)
  lookup     the true code of the nearest *training* identity (by blend weights): what recalling a known person gives
  zeroed     the trained pipeline with the identity zeroed at injection
  shuffled   the trained encoder given *another* identity's input view (scored against that photo's identity)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from facegen.cluster.world.base import EDITS, PROMPT, code_of, load_codes, name_word, sdxl_code_conditioning
from facegen.cluster.world.build import World
from facegen.cluster.world.config import WorldConfig
from facegen.core.face.config import FaceAnalyzerConfig
from facegen.core.methods import get_method
from facegen.core.methods.dreamidentity.pipeline import IdTokens
from facegen.core.methods.faceclip.pipeline import FaceCLIPCondition, FaceCLIPSDXLPipeline

PLAIN_PROMPT = PROMPT.format("S*")
EDIT_PROMPT = EDITS[0].format("S*")
METHODS = ("dreamidentity", "faceclip", "dreamidentity-sdxl")
CONDITIONS = ("fresh", "trained", "ceiling", "lookup", "zeroed", "shuffled")


@dataclass
class LearnConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    m2_steps: int = 400  # training steps of DreamIdentity's M² (jobs/train_m2.py)
    faceclip_steps: int = 400  # of the FaceCLIP encoder (jobs/train_faceclip.py, diffusion stage, frozen UNet)
    lr: float = 1e-3
    batch_size: int = 16
    train_vit: bool = True  # M²'s face ViT trains too: the world has no face-recognition ViT to start it from
    samples: int = 2  # K: images per identity and prompt
    steps: int = 25  # sampling steps
    guidance: list[float] = field(default_factory=lambda: [2.0, 3.0, 5.0])  # candidates, chosen on validation
    held_in: int = 24  # training identities scored for the held-in figures (seeded choice)
    curve_points: int = 4  # checkpoints scored on validation (the curve; the best one is the one reported)
    ablation: bool = True  # also train M² without the self-augmented rows
    ffhq_ratio: float = 0.85  # share of the encoders' training rows that are the identities' own views
    ffhq_views: int = 4  # training views per identity given to the data job as its photos
    bootstrap: int = 2000  # resamples of identities for every interval
    # The face stack the methods run on: data filtering, FaceCLIP's face embedding, identification and every score
    # (`--set face.model=dlib`: the CC0 stack). The world itself — its anchors, identities and base models — is built
    # with buffalo_s whatever this says, so both stacks are measured on one world.
    face: FaceAnalyzerConfig = field(default_factory=FaceAnalyzerConfig)


def write_preset(world: World, directory: Path, cfg: LearnConfig, guidance: dict[str, float]) -> Path:
    """<directory>/world.yaml: `extends: tiny`, both methods' base models set to the world's, the world's sampling
    (guidance per method as chosen on validation), and the jobs' sections sized for it."""
    w = world.config
    size = {"width": w.size, "height": w.size}
    every = max(1, max(cfg.m2_steps, cfg.faceclip_steps) // max(cfg.curve_points, 1))
    preset = {
        "extends": "tiny",
        "name": "world",
        "face": dataclasses.asdict(cfg.face),
        "methods": {
            "dreamidentity": {"base_model": str(world.sd21), "sampling": {
                "steps": cfg.steps, "guidance_scale": guidance["dreamidentity"], "scheduler": "ddim", **size},
                "train": {"train_vit": cfg.train_vit}},
            "faceclip": {"base_model": str(world.sdxl), "sampling": {
                "steps": cfg.steps, "guidance_scale": guidance["faceclip"], "scheduler": "euler", **size},
                # the diffusion loss only: the world has no CLIP model worth aligning to (the tiny one is random)
                "train": {"stage": "diffusion", "unet": "frozen", "align_weight": 0.0}},
            "dreamidentity-sdxl": {"base_model": str(world.sdxl_tokens), "sampling": {
                "steps": cfg.steps, "guidance_scale": guidance["dreamidentity-sdxl"], "scheduler": "euler", **size},
                "train": {"train_vit": cfg.train_vit}},
        },
        "data": {
            "source_prompt": PLAIN_PROMPT,
            "edit_prompts": [e.format("S*") for e in EDITS],
            "max_prompts": None,
            "steps": cfg.steps, "guidance_scale": guidance["dreamidentity"], **size,  # drawn by the SD2.1 base
            "keep_fraction": 0.67,
            "min_face_size": w.size // 2,  # the drawn image is the aligned face (assume_aligned, from tiny)
            "clip_weight": 0.0,  # the tiny CLIP scorer is random: keep by identity alone
            "ffhq_size": w.size,
            "ffhq_captions": [PLAIN_PROMPT],
        },
        "train": {
            "lr": cfg.lr, "batch_size": cfg.batch_size, "resolution": w.size, "ffhq_ratio": cfg.ffhq_ratio,
            "checkpoint_every": every, "keep_checkpoints": cfg.curve_points + 2, "log_every": 50,
            "shuffle_buffer": 256, "cpus_per_worker": 1.0,
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "world.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


def write_job_inputs(world: World, directory: Path, cfg: LearnConfig) -> tuple[Path, Path]:
    """The encoders' inputs as the data job reads them, training identities only: photos/<name>/NN.png (training
    views; never a reference or an input view) for `--ffhq`, and names.txt (their names in the SD2.1 base model's
    vocabulary) for `--celebrities`."""
    import PIL.Image

    photos = directory / "photos"
    train = world.split("train")
    for o in train:
        (photos / o.name).mkdir(parents=True, exist_ok=True)
        for i, view in enumerate(world.training_views(o.name)[: cfg.ffhq_views], start=1):
            PIL.Image.fromarray(view).save(photos / o.name / f"{i:02d}.png")
    names = directory / "names.txt"
    names.write_text("".join(name_word(o.name) + "\n" for o in train))
    return photos, names


@dataclass
class WorldCode:
    """An identity as the world's SDXL base model takes it: per text tower, its code at FaceCLIP's id slot
    (1×D1, 1×D2; batched: one more leading dimension)."""

    towers: list[torch.Tensor]

    @classmethod
    def stack(cls, items) -> WorldCode:
        return cls([torch.stack([i.towers[t] for i in items]) for t in range(len(items[0].towers))])


class CodeFaceCLIPPipeline(FaceCLIPSDXLPipeline):
    """FaceCLIP's pipeline with the world's true code at the id slot of its text towers (SDXL's own, in a fresh
    encoder) instead of a face: the ceiling and the lookup. The towers, the prefixed prompt, the slot, the negative and
    the denoiser are FaceCLIP's; only the face side is bypassed."""

    def encode_conditioning(self, prompts: list[str], negatives: list[str], identity) -> dict:
        codes = WorldCode.stack(identity) if isinstance(identity, (list, tuple)) else identity
        b = len(prompts)
        towers = [c if c.dim() == 3 else c.expand(b, *c.shape) for c in codes.towers]
        e = self.faceclip_encoder
        te1, te2 = e.branch_1.text_encoder, e.branch_2.text_encoder
        embeds, pooled = sdxl_code_conditioning(te1, te2, e.tokenizer, e.tokenizer_2, prompts, *towers)
        zeros = [torch.zeros_like(t) for t in towers]
        neg, neg_pooled = sdxl_code_conditioning(te1, te2, e.tokenizer, e.tokenizer_2, negatives, *zeros)
        dtype = self.unet.dtype
        return {"prompt_embeds": embeds.to(dtype), "pooled_prompt_embeds": pooled.to(dtype),
                "negative_prompt_embeds": neg.to(dtype), "negative_pooled_prompt_embeds": neg_pooled.to(dtype)}


class Evaluator:
    """Draws each condition through the method's pipeline, K seeded images per identity and prompt."""

    def __init__(self, world: World, preset: Path, analyzer, cfg: LearnConfig):
        self.world, self.preset, self.analyzer, self.cfg = world, preset, analyzer, cfg
        self.codes = {"dreamidentity": load_codes(world.sd21), "faceclip": load_codes(world.sdxl),
                      "dreamidentity-sdxl": load_codes(world.sdxl_tokens)}

    def pipeline(self, method: str, model: str | Path | None = None, code: bool = False):
        """The method's pipeline (a trained encoder from `model`); code=True: the one that takes true codes."""
        entry = get_method(method)
        cls = CodeFaceCLIPPipeline if code and entry.identity_class() is FaceCLIPCondition else entry.pipeline_class()
        pipe = cls.from_preset(str(self.preset), model=str(model) if model else None, face_analyzer=self.analyzer,
                               method=method)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- identities, per condition -------------------------------------------------------------------------------
    def encoder_identities(self, pipe, names: list[str]) -> list:
        """The encoder's identity of each name's input view (a view no model trained on)."""
        return [pipe.face_encoder.from_aligned(self.world.input_view(n)[None]) for n in names]

    def code_identities(self, method: str, weights: list[np.ndarray]) -> list:
        """True codes, as the method's injection path takes them (M²: IdTokens in S*'s slots; FaceCLIP: WorldCode)."""
        codes = [code_of(self.codes[method], w) for w in weights]
        if get_method(method).identity_class() is IdTokens:  # written into S*'s slots, the towers' widths side by side
            return [IdTokens(torch.cat(c, dim=-1)) for c in codes]
        return [WorldCode(c) for c in codes]

    def zero_identities(self, pipe, method: str, count: int) -> list:
        """The identity zeroed at injection: M²'s id_tokens, FaceCLIP's face condition (what its negative reads)."""
        if get_method(method).identity_class() is IdTokens:
            k, d = pipe.m2_encoder.m2_config.num_tokens, pipe.m2_encoder.m2_config.token_dim
            return [IdTokens(torch.zeros(k, d))] * count
        e, t = pipe.faceclip_encoder.zero_condition()
        return [FaceCLIPCondition(e.float().cpu(), t.float().cpu())] * count

    # -- drawing -------------------------------------------------------------------------------------------------
    def draw(self, pipe, identities: list, prompt: str, guidance: float | None = None, batch: int = 8) -> np.ndarray:
        """N identities → N×K×size×size×3 uint8; sample j of every identity uses seed world.seed + j."""
        k = self.cfg.samples
        out = []
        for i in range(0, len(identities), batch):
            chunk = identities[i:i + batch]
            ids = [x for x in chunk for _ in range(k)]
            gens = [torch.Generator().manual_seed(self.world.config.seed + j) for _ in chunk for j in range(k)]
            images = pipe([prompt] * len(ids), identity=ids, generator=gens, output_type="np",
                          guidance_scale=guidance).images
            out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8).reshape(len(chunk), k, *images.shape[1:]))
        return np.concatenate(out)


def with_overrides(cfg: LearnConfig, overrides: list[str]) -> LearnConfig:
    """`key=value` / `world.key=value` overrides, checked as presets are (an unknown key or a bad value names it)."""
    from facegen.core.config import _set_path, _split_override
    from facegen.core.typed import from_dict

    data = dataclasses.asdict(cfg)
    for item in overrides:
        key, value = _split_override(item)
        _set_path(data, key, value)
    return from_dict(LearnConfig, data, "")
