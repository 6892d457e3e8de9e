"""The evaluation protocol on Ray: test faces spread over a pool of `FaceEvaluator` actors (each holds one pipeline,
the recognizer and the CLIP scorer); every face is drawn for every prompt with the same fixed seeds, each image is
scored, and the driver writes metrics.json, report.md, one grid per face and the trade-off plot.
"""
from __future__ import annotations

import io
import math
import os
import posixpath

import PIL.Image
import torch

from facegen.cluster.data.storage import Storage
from facegen.cluster.eval.metrics import (
    ImageScore,
    face_similarities,
    head_box_ious,
    rows_to_json,
    summarize,
    text_alignments,
)
from facegen.cluster.eval.report import face_grid, report_markdown, scatter_png
from facegen.core.config import Preset
from facegen.core.config.eval import EvalPrompt
from facegen.core.errors import ConfigError, FacegenError
from facegen.core.face.images import png_bytes
from facegen.core.face.registry import face_metric
from facegen.core.models.export import CONFIG_NAME, not_an_export

PLOT_FILE = "face_similarity_vs_text_alignment.png"


class FaceEvaluator:
    """One Ray actor: draws and scores whole faces (pipeline, recognizer and CLIP scorer loaded once)."""

    def __init__(self, method: str, preset: Preset, model_uri: str | None):
        from facegen.cluster.workers import actor_device, quiet_libraries
        from facegen.core.face.analyzer import FaceAnalyzer
        from facegen.core.methods import load_pipeline
        from facegen.core.models.clip_scorer import ClipScorer

        quiet_libraries()
        self.cfg, self.method = preset.eval, method
        self.device, _ = actor_device()
        if model_uri:
            with Storage.open(model_uri).local_copy() as model:  # loaded into memory; the copy is removed
                self.pipe = load_pipeline(method, preset, model, device=self.device)
        else:
            self.pipe = load_pipeline(method, preset, device=self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.recognizer = FaceAnalyzer(self.cfg.recognizer or preset.face)
        self.clip = ClipScorer(preset.clip).to(self.device)

    def evaluate(self, name: str, photo: bytes, prompts: list[EvalPrompt]) -> dict:
        """→ {"name", "scores": [ImageScore...], "grid": PNG bytes} or {"name", "skipped": reason}."""
        from facegen.core.errors import NoFaceFound
        from facegen.core.face.images import load_image

        c = self.cfg
        try:
            rgb = load_image(photo)
            identity = self.pipe.encode_identity(rgb)
            reference = self.recognizer.face_embedding(rgb)
        except NoFaceFound:  # reported with the results, not fatal
            return {"name": name, "skipped": "no face found"}
        except FacegenError as e:
            return {"name": name, "skipped": str(e)}
        n = c.images_per_prompt
        scores, rows = [], []
        for p in prompts:
            generators = [torch.Generator(self.device).manual_seed(c.seed + i) for i in range(n)]
            control = {"head_box": c.head_box, "face_image": rgb} if c.head_box else {}  # posed as the test face
            images = self.pipe(p.prompt, identity=identity, num_inference_steps=c.steps, guidance_scale=c.guidance_scale,
                               width=c.width, height=c.height, num_images_per_prompt=n, generator=generators,
                               **control).images
            sims, missing = face_similarities(self.recognizer, reference, images)
            clip_t = text_alignments(self.clip, images, p.prompt)
            ious = head_box_ious(self.recognizer, images, c.head_box) if c.head_box else [None] * n
            scores += [ImageScore(name, p.category, p.prompt, i, sims[i], clip_t[i], missing[i], ious[i])
                       for i in range(n)]
            rows.append((p.prompt, images))
        grid = face_grid(PIL.Image.fromarray(rgb), rows, c.grid_cell)
        return {"name": name, "scores": scores, "grid": png_bytes(grid)}


def read_faces(uri: str) -> list[tuple[str, bytes]]:
    """(name, file bytes) of every image under --faces (local dir or s3://), names unique and file-system safe."""
    src = Storage.open(uri)
    files = src.image_files("--faces")
    out, taken = [], set()
    for path in files:
        rel = posixpath.relpath(path, src.root)
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in os.path.splitext(rel)[0])
        name, n = base, 1
        while name in taken:  # "a b.png" and "a_b.jpg" must not share a grid
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        out.append((name, src.read_bytes(path)))
    return out


def run_evaluation(method: str, preset: Preset, out: Storage, faces_uri: str, model_uri: str | None) -> dict:
    import ray

    from facegen.cluster.jobs import ensure_ray

    cfg = preset.eval
    section = preset.method(method)  # the preset offers this method
    prompts = cfg.protocol_prompts()
    if cfg.head_box is not None:  # a box off the canvas, or no ControlNet: said now, not by every actor
        from facegen.core.control import check_head_box

        check_head_box(cfg.head_box, cfg.width or section.sampling.width, cfg.height or section.sampling.height)
        if not section.controlnet.model:
            raise ConfigError(f"eval.head_box needs a ControlNet: set methods.{method}.controlnet.model")
    faces = read_faces(faces_uri)
    if model_uri and not Storage.open(model_uri).is_file(CONFIG_NAME):
        raise ConfigError("--model " + not_an_export(model_uri))
    for name, data in faces:  # unreadable files are a user's mistake: say which, before any actor starts
        try:
            PIL.Image.open(io.BytesIO(data)).verify()
        except Exception:
            raise ConfigError(f"--faces: {name} is not a readable image") from None
    ensure_ray()
    gpus = cfg.num_gpus if ray.cluster_resources().get("GPU", 0) else 0
    actor = ray.remote(FaceEvaluator).options(num_cpus=cfg.num_cpus, num_gpus=gpus or None)
    pool = ray.util.ActorPool([actor.remote(method, preset, model_uri) for _ in range(max(1, min(cfg.pool_size, len(faces))))])
    print(f"evaluate: {len(faces)} faces × {len(prompts)} prompts × {cfg.images_per_prompt} images ({method})", flush=True)
    results = []
    for r in pool.map(lambda a, face: a.evaluate.remote(face[0], face[1], prompts), faces):
        results.append(r)
        print(f"evaluate: {r['name']}: " + (f"skipped ({r['skipped']})" if "skipped" in r else
              f"{len(r['scores'])} images"), flush=True)
    skipped = [r["name"] for r in results if "skipped" in r]
    scored = [r for r in results if "scores" in r]
    if not scored:
        raise ConfigError(f"--faces {faces_uri}: no face found in any photo ({'; '.join(r['skipped'] for r in results)})")
    rows = [s for r in scored for s in r["scores"]]
    grids = {}
    for r in scored:
        grids[r["name"]] = f"grids/{r['name']}.png"
        out.write_atomic(grids[r["name"]], r["grid"])
    metrics = {"method": method, "preset": preset.name, "model": model_uri or "preset", **summarize(rows),
               "images_per_prompt": cfg.images_per_prompt,
               "seeds": [cfg.seed + i for i in range(cfg.images_per_prompt)], "person_words": preset.clip.person_words,
               "prompts": [{"category": p.category, "prompt": p.prompt} for p in prompts],
               "skipped_faces": skipped, "grid_rows": [p.prompt for p in prompts], "head_box": cfg.head_box,
               "face_metric": face_metric(cfg.recognizer or preset.face).name}
    out.write_atomic(PLOT_FILE, scatter_png(metrics["per_prompt"], f"{method}: one point per prompt",
                                            metrics["face_metric"]))
    out.write_json("scores.json", rows_to_json(rows))
    out.write_json("metrics.json", _finite(metrics))
    out.write_atomic("report.md", report_markdown(metrics, grids, PLOT_FILE).encode())
    o = metrics["overall"]
    iou = f" · head-box IoU {o['head_box_iou']:.3f}" if "head_box_iou" in o else ""
    print(f"evaluate: face similarity {o['face_similarity']:.4f} · text alignment {o['text_alignment']:.2f} · "
          f"no face {o['no_face']}/{o['images']}{iou}", flush=True)
    return {"counts": {"faces": len(scored), "skipped_faces": len(skipped), "prompts": len(prompts),
                       "images": len(rows), "no_face": o["no_face"]},
            "metrics": out.uri_of("metrics.json")}


def _finite(obj):
    """JSON has no NaN: a metric with nothing behind it is null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


__all__ = ["FaceEvaluator", "read_faces", "run_evaluation"]
