"""The self-augmented data stages, as callable classes for `Dataset.map_batches` (one model load per actor).

Rows flow as pandas batches. A row that a stage rejects keeps flowing with its `status` set ("no_face",
"too_small", "unreadable"), so the writer can record it (counts and `--resume` need it); later stages pass such
rows through untouched. Each stage adds its busy time to the row's `t_<stage>` column for the throughput report.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import PIL.Image
import torch

from facegen.cluster.data.schema import encode_latents
from facegen.cluster.workers import actor_device, quiet_libraries
from facegen.core.config import Preset
from facegen.core.errors import FacegenError
from facegen.core.face.align import align_face
from facegen.core.face.analyzer import FaceAnalyzer
from facegen.core.face.images import decode_image, png_bytes
from facegen.core.prompts import PLACEHOLDER
from facegen.core.seeds import stable_seed

OK = "ok"


def fill_name(template: str, name: str) -> str:
    return template.replace(PLACEHOLDER, name)


def _timed(df: pd.DataFrame, column: str, start: float) -> pd.DataFrame:
    df[column] = (time.perf_counter() - start) / max(len(df), 1)
    return df


class _Generator:
    """The base model of data.method's section (its family's own diffusers pipeline: SD 2.1's, SDXL's), drawing one
    image per (prompt, seed)."""

    def __init__(self, preset: Preset):
        from facegen.core.methods import get_method
        from facegen.core.methods.pipeline_utils import make_scheduler

        quiet_libraries()
        self.preset, self.cfg = preset, preset.data
        section, base = preset.method(self.cfg.method), get_method(self.cfg.method).base_family
        self.device, dtype = actor_device(section.dtype, key=f"methods.{self.cfg.method}.dtype")
        parts = base.load(section.base_model, section.sha256, torch_dtype=dtype)
        parts["scheduler"] = make_scheduler(section.sampling.scheduler, parts["scheduler"])
        self.pipe = base.denoiser(parts).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def draw(self, prompts: list[str], seeds: list[int]) -> list[PIL.Image.Image]:
        c = self.cfg
        generators = [torch.Generator(self.device).manual_seed(s) for s in seeds]
        return self.pipe(prompts, negative_prompt=[c.negative_prompt] * len(prompts), generator=generators,
                         num_inference_steps=c.steps, guidance_scale=c.guidance_scale,
                         width=c.width, height=c.height).images


class GenerateSourceStage(_Generator):
    """subject → source_image: "<name> face, looking at the camera"."""

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        prompts = [fill_name(self.cfg.source_prompt, n) for n in df["subject"]]
        seeds = [stable_seed(self.cfg.seed, "source", n) for n in df["subject"]]
        df["source_image"] = [png_bytes(img) for img in self.draw(prompts, seeds)]
        df["status"] = OK
        return _timed(df, "t_generate", start)


class AlignStage:
    """source_image → source_face (aligned crop) + face_embedding, or status no_face / too_small."""

    def __init__(self, preset: Preset):
        quiet_libraries()
        self.cfg = preset.data
        self.analyzer = FaceAnalyzer(preset.face)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        faces, embeddings, status = [], [], []
        crops = [decode_image(b) for b in df["source_image"]]
        if self.cfg.assume_aligned:  # the generated image is the crop (tiny preset / pre-aligned data)
            ok = [min(c.shape[:2]) > self.cfg.min_face_size for c in crops]
            emb = self.analyzer.embed_aligned([c for c, good in zip(crops, ok) if good]) if any(ok) else []
            it = iter(emb)
            for crop, good in zip(crops, ok):
                small = np.asarray(PIL.Image.fromarray(crop).resize((self.cfg.face_size,) * 2, PIL.Image.BICUBIC))
                faces.append(png_bytes(small) if good else b"")
                embeddings.append(next(it).tolist() if good else [])
                status.append(OK if good else "too_small")
        else:
            for rgb in crops:
                face, state = self.align(rgb)
                faces.append(png_bytes(align_face(rgb, face.kps, self.cfg.face_size)) if state == OK else b"")
                embeddings.append(face.embedding.tolist() if state == OK else [])
                status.append(state)
        df["source_face"], df["face_embedding"], df["status"] = faces, embeddings, status
        df = df.drop(columns=["source_image"])
        return _timed(df, "t_align", start)

    def align(self, rgb: np.ndarray):
        faces = self.analyzer.detect(rgb)
        if not faces:
            return None, "no_face"
        x1, y1, x2, y2 = faces[0].bbox
        if min(x2 - x1, y2 - y1) <= self.cfg.min_face_size:
            return faces[0], "too_small"
        return faces[0], OK


class EditStage(_Generator):
    """One subject row → one row per edit prompt: "<name> as a chef" drawn, stored as "S* as a chef"."""

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        prompts = self.cfg.prompts()
        rows, jobs = [], []
        for rec in df.to_dict("records"):
            if rec["status"] != OK:
                rows.append({**rec, "prompt": "", "prompt_index": -1, "edited_image": b""})
                continue
            for i, template in enumerate(prompts):
                rows.append({**rec, "prompt": template, "prompt_index": i, "edited_image": b""})
                jobs.append((len(rows) - 1, fill_name(template, rec["subject"]), stable_seed(self.cfg.seed, "edit", rec["subject"], i)))
                if i:  # the subject's earlier stage times count once
                    rows[-1].update(t_generate=0.0, t_align=0.0)
        batch = max(1, self.cfg.edit.batch_size)
        for b in range(0, len(jobs), batch):
            chunk = jobs[b:b + batch]
            for (row, _, _), img in zip(chunk, self.draw([j[1] for j in chunk], [j[2] for j in chunk])):
                rows[row]["edited_image"] = png_bytes(img)
        elapsed = (time.perf_counter() - start) / max(len(jobs), 1)
        out = pd.DataFrame(rows)
        out["t_edit"] = [elapsed if r["prompt_index"] >= 0 else 0.0 for r in rows]
        return out


class ScoreStage:
    """id_score: the face stack's similarity (its metric's) between the edited image's face and the source face (0
    when it has none);
    clip_score: CLIP-T between the edited image and its prompt with S* read as clip.person_words."""

    def __init__(self, preset: Preset):
        from facegen.core.models.clip_scorer import ClipScorer

        quiet_libraries()
        self.cfg = preset.data
        self.analyzer = FaceAnalyzer(preset.face)
        self.device, _ = actor_device()
        self.clip = ClipScorer(preset.clip).to(self.device)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        ok = (df["status"] == OK).to_numpy()
        id_scores = np.zeros(len(df), np.float32)
        clip_scores = np.zeros(len(df), np.float32)
        if ok.any():
            idx = np.flatnonzero(ok)
            images = [decode_image(df["edited_image"].iloc[i]) for i in idx]
            sources = [np.asarray(df["face_embedding"].iloc[i], np.float32) for i in idx]
            id_scores[idx] = self.identity_scores(images, sources)
            texts = [self.clip.reading(df["prompt"].iloc[i]) for i in idx]
            clip_scores[idx] = self.clip.score([PIL.Image.fromarray(im) for im in images], texts).cpu().numpy()
        df["id_score"], df["clip_score"] = id_scores, clip_scores
        return _timed(df, "t_score", start)

    def identity_scores(self, images: list[np.ndarray], sources: list[np.ndarray]) -> np.ndarray:
        if self.cfg.assume_aligned:
            emb = self.analyzer.embed_aligned(images)
            return np.array([self.analyzer.metric.similarity(e, s) for e, s in zip(emb, sources)], np.float32)
        return np.asarray(self.analyzer.similarities(images, sources)[0], np.float32)


class LatentStage:
    """Optional: the VAE latents of each target image, so training need not run the VAE encoder."""

    def __init__(self, preset: Preset, image_column: str):
        from diffusers import AutoencoderKL

        from facegen.core.weights import resolve_model

        quiet_libraries()
        section = preset.method(preset.data.method)
        self.device, self.dtype = actor_device(section.dtype, key=f"methods.{preset.data.method}.dtype")
        path = resolve_model(section.base_model, section.sha256)
        self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=self.dtype).to(self.device).eval()
        if self.vae.config.force_upcast and self.dtype == torch.float16:  # SDXL's VAE overflows in fp16
            self.vae, self.dtype = self.vae.float(), torch.float32
        self.column = image_column

    @torch.no_grad()
    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        blobs, shapes = [], []
        for data, status in zip(df[self.column], df["status"]):
            if status != OK:
                blobs.append(b"")
                shapes.append([])
                continue
            latents = encode_vae(self.vae, decode_image(data), self.device, self.dtype)
            blob, shape = encode_latents(latents)
            blobs.append(blob)
            shapes.append(shape)
        df["latents"], df["latents_shape"] = blobs, shapes
        return _timed(df, "t_latents", start)


def encode_vae(vae, rgb: np.ndarray, device, dtype) -> np.ndarray:
    """H×W×3 uint8 → the VAE's scaled latent mean (C×h×w), as training uses it."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device, dtype) / 127.5 - 1
    latents = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    return latents[0].float().cpu().numpy()


class FFHQStage:
    """A photo file → aligned face + its face_embedding + target image + caption, or status unreadable / no_face."""

    def __init__(self, preset: Preset, source_uri: str):
        from facegen.cluster.data.storage import Storage

        quiet_libraries()
        self.cfg = preset.data
        self.analyzer = FaceAnalyzer(preset.face)
        self.storage = Storage.open(source_uri)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        from facegen.core.face.images import load_image

        start = time.perf_counter()
        out = {"source_face": [], "face_embedding": [], "target_image": [], "prompt": [], "status": []}
        for path, subject in zip(df["path"], df["subject"]):
            face, embedding, target, state = b"", [], b"", OK
            try:
                rgb = load_image(self.storage.read_bytes(path))
            except (FacegenError, OSError):
                rgb, state = None, "unreadable"
            if rgb is not None:
                faces = self.analyzer.detect(rgb)
                if not faces:
                    state = "no_face"
                else:
                    face = png_bytes(align_face(rgb, faces[0].kps, self.cfg.face_size))
                    embedding = faces[0].embedding.tolist()
                    target = png_bytes(center_square(rgb, self.cfg.ffhq_size))
            captions = self.cfg.ffhq_captions
            out["source_face"].append(face)
            out["face_embedding"].append(embedding)
            out["target_image"].append(target)
            out["prompt"].append(captions[stable_seed(self.cfg.seed, subject) % len(captions)])
            out["status"].append(state)
        for k, v in out.items():
            df[k] = v
        return _timed(df, "t_ffhq", start)


def center_square(rgb: np.ndarray, size: int) -> PIL.Image.Image:
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return PIL.Image.fromarray(rgb[top:top + s, left:left + s]).resize((size, size), PIL.Image.BICUBIC)
