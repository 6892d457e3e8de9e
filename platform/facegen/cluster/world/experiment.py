"""What `bench/learn.py` runs in the miniature world, through the project's real paths: the world's preset (the
tiny preset with its base models pointed at the world's), the encoders' training data as the jobs read it, and the
scoring of each method's drawings — fresh encoder, trained encoder, and the base model prompted with the person's
own word (the ceiling).

    preset = write_preset(world, directory, LearnConfig())
    write_job_inputs(world, directory)                     # photos/<name>/*.png + names.txt for build_data
    scores = Evaluator(world, preset, analyzer).method("dreamidentity", model_dir)   # per person, per prompt
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from facegen.cluster.world.base import EDITS, PROMPT
from facegen.cluster.world.build import World
from facegen.cluster.world.config import WorldConfig
from facegen.cluster.world.score import edit_threshold, score_images, summarize

PLAIN_PROMPT = PROMPT.format("S*")
EDIT_PROMPT = EDITS[0].format("S*")
METHODS = ("dreamidentity", "faceclip")


@dataclass
class LearnConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    # Both encoders peak by ~100 steps and then slowly overfit the few views (measured at 100/200/300 steps:
    # identification 0.91/0.88/0.88 for M², 0.88/0.81/0.78 for FaceCLIP)
    m2_steps: int = 100  # training steps of DreamIdentity's M² (jobs/train_m2.py)
    faceclip_steps: int = 100  # of the FaceCLIP encoder (jobs/train_faceclip.py, diffusion stage, frozen UNet)
    lr: float = 1e-3
    batch_size: int = 16
    samples: int = 4  # K: images per person and prompt
    steps: int = 25  # sampling steps
    guidance: float = 3.0  # the small base models draw their people best at 3 (measured against 2, 5 and 8)
    curve_points: int = 4  # checkpoints scored for the metric-over-steps plot
    ablation: bool = True  # also train M² without the self-augmented rows (the edit's before/after)
    ffhq_ratio: float = 0.85  # share of the encoders' training rows that are the people's own views


def write_preset(world: World, directory: Path, cfg: LearnConfig) -> Path:
    """<directory>/world.yaml: `extends: tiny`, both methods' base models set to the world's, the world's sampling,
    and the jobs' sections sized for it."""
    w = world.config
    size = {"width": w.size, "height": w.size}
    every = max(1, max(cfg.m2_steps, cfg.faceclip_steps) // max(cfg.curve_points, 1))
    preset = {
        "extends": "tiny",
        "name": "world",
        "methods": {
            "dreamidentity": {"base_model": str(world.sd21), "sampling": {
                "steps": cfg.steps, "guidance_scale": cfg.guidance, "scheduler": "ddim", **size}},
            "faceclip": {"base_model": str(world.sdxl), "sampling": {
                "steps": cfg.steps, "guidance_scale": cfg.guidance, "scheduler": "euler", **size},
                # the diffusion loss only: the world has no CLIP model worth aligning to (the tiny one is random)
                "train": {"stage": "diffusion", "unet": "frozen", "align_weight": 0.0}},
        },
        "data": {
            "source_prompt": PLAIN_PROMPT,
            "edit_prompts": [e.format("S*") for e in EDITS],
            "max_prompts": None,
            "steps": cfg.steps, "guidance_scale": cfg.guidance, **size,
            "keep_fraction": 0.67,
            "min_face_size": w.size // 2,  # the drawn image is the aligned face (assume_aligned, from tiny)
            "clip_weight": 0.0,  # the tiny CLIP scorer is random: keep by identity alone
            "ffhq_size": w.size,
            "ffhq_captions": [PLAIN_PROMPT],
        },
        "train": {
            "lr": cfg.lr, "batch_size": cfg.batch_size, "resolution": w.size, "ffhq_ratio": cfg.ffhq_ratio,
            "checkpoint_every": every, "keep_checkpoints": cfg.curve_points + 2, "log_every": 50,
            "shuffle_buffer": 64, "cpus_per_worker": 1.0,
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "world.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


def write_job_inputs(world: World, directory: Path) -> tuple[Path, Path]:
    """The encoders' inputs as the data job reads them: photos/<name>/NN.png (each held-in person's training views,
    never the evaluation view) for `--ffhq`, and names.txt (the held-in names) for `--celebrities`."""
    import PIL.Image

    photos = directory / "photos"
    for name in world.held_in:
        (photos / name).mkdir(parents=True, exist_ok=True)
        for i, view in enumerate(world.training_views(name), start=1):
            PIL.Image.fromarray(view).save(photos / name / f"{i:02d}.png")
    names = directory / "names.txt"
    names.write_text("".join(n + "\n" for n in world.held_in))
    return photos, names


class Evaluator:
    """Draws and scores each person, K seeded images per prompt (plain and edited), through the method's pipeline."""

    def __init__(self, world: World, preset: Path, analyzer, cfg: LearnConfig):
        self.world, self.preset, self.analyzer, self.cfg = world, preset, analyzer, cfg
        colour = world.at_size(np.concatenate([world.training_views(n) for n in world.names]))
        self.threshold = edit_threshold(colour)

    def _generators(self):
        import torch

        return [torch.Generator().manual_seed(self.world.config.seed + i) for i in range(self.cfg.samples)]

    def _to_uint8(self, images: np.ndarray) -> np.ndarray:
        return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)

    def pipeline(self, method: str, model: str | Path | None):
        from facegen.core.methods import get_method

        pipe = get_method(method).pipeline_class().from_preset(str(self.preset), model=str(model) if model else None,
                                                               face_analyzer=self.analyzer)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def draw_encoder(self, pipe, names: list[str], prompts=(PLAIN_PROMPT, EDIT_PROMPT)) -> dict:
        """{prompt: {name: K images}} drawn from each person's evaluation view through the encoder."""
        out = {p: {} for p in prompts}
        for name in names:
            identity = pipe.face_encoder.from_aligned(self.world.eval_view(name)[None])
            for p in prompts:
                images = pipe([p] * self.cfg.samples, identity=[identity] * self.cfg.samples,
                              generator=self._generators(), output_type="np").images
                out[p][name] = self._to_uint8(images)
        return out

    def draw_ceiling(self, method: str, names: list[str], prompts=(PLAIN_PROMPT, EDIT_PROMPT)) -> dict:
        """The base model itself, prompted with each person's own word (diffusers' pipeline, the preset's sampling)."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        from facegen.core.config import load_preset
        from facegen.core.methods.pipeline_utils import make_scheduler

        section = load_preset(str(self.preset)).method(method)
        cls = StableDiffusionPipeline if method == "dreamidentity" else StableDiffusionXLPipeline
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} \
            if method == "dreamidentity" else {"add_watermarker": False}
        pipe = cls.from_pretrained(section.base_model, **extra)
        pipe.scheduler = make_scheduler(section.sampling.scheduler, pipe.scheduler)
        pipe.set_progress_bar_config(disable=True)
        s = section.sampling
        out = {p: {} for p in prompts}
        for name in names:
            for p in prompts:
                images = pipe([p.replace("S*", name)] * self.cfg.samples, num_inference_steps=s.steps,
                              guidance_scale=s.guidance_scale, width=s.width, height=s.height,
                              generator=self._generators(), output_type="np").images
                out[p][name] = self._to_uint8(images)
        return out

    def score(self, drawn: dict) -> dict:
        """{held_in, held_out: {plain: {...}, edited: {...}}} from draw_*'s images."""
        index = {n: i for i, n in enumerate(self.world.names)}
        result = {}
        for group, names in (("held_in", self.world.held_in), ("held_out", self.world.held_out)):
            result[group] = {}
            for p, label in ((PLAIN_PROMPT, "plain"), (EDIT_PROMPT, "edited")):
                if p not in drawn:
                    continue
                rows = [score_images(self.analyzer, drawn[p][n], index[n], self.world.references, self.threshold)
                        for n in names if n in drawn[p]]
                result[group][label] = summarize(rows, edited=label == "edited")
        return result


def record(world: World, scores: dict[str, dict]) -> dict:
    """The learn.json fields per method: held_in / held_out, each with identification, face_sim, face_sim_fresh,
    face_sim_ceiling and edit_obeyed (+ the detail of every condition)."""
    out = {}
    for method, s in scores.items():
        out[method] = {}
        for group in ("held_in", "held_out"):
            trained, fresh, ceiling = s["trained"][group], s["fresh"][group], s["ceiling"][group]
            if not trained:
                continue
            row = {
                "identification": trained["plain"]["identification"],
                "face_sim": trained["plain"]["face_sim"],
                "face_sim_fresh": fresh["plain"]["face_sim"],
                "face_sim_ceiling": ceiling["plain"]["face_sim"],
                "gap_closed": _gap(fresh["plain"]["face_sim"], trained["plain"]["face_sim"], ceiling["plain"]["face_sim"]),
                "edit_obeyed": trained["edited"]["edit_obeyed"],
                "edited_identification": trained["edited"]["identification"],
                "identification_fresh": fresh["plain"]["identification"],
                "identification_ceiling": ceiling["plain"]["identification"],
                "edit_obeyed_ceiling": ceiling["edited"]["edit_obeyed"],
            }
            if "without_selfaug" in s and s["without_selfaug"].get(group):
                ab = s["without_selfaug"][group]
                row["without_selfaug"] = {"identification": ab["plain"]["identification"],
                                          "edit_obeyed": ab["edited"]["edit_obeyed"],
                                          "edited_identification": ab["edited"]["identification"]}
            out[method][group] = row
    return out


def _gap(fresh, trained, ceiling) -> float | None:
    if None in (fresh, trained, ceiling) or ceiling - fresh <= 1e-6:
        return None
    return round((trained - fresh) / (ceiling - fresh), 4)


def with_overrides(cfg: LearnConfig, overrides: list[str]) -> LearnConfig:
    """`key=value` / `world.key=value` overrides, checked as presets are (an unknown key or a bad value names it)."""
    from facegen.core.config import _set_path, _split_override
    from facegen.core.typed import from_dict

    data = dataclasses.asdict(cfg)
    for item in overrides:
        key, value = _split_override(item)
        _set_path(data, key, value)
    return from_dict(LearnConfig, data, "")
