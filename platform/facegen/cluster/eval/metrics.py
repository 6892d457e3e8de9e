"""The two numbers of the papers' protocol, per generated image, and their averages.

Face similarity: the face stack's similarity (its metric's: ArcFace cosine, or dlib's 1 − Euclidean distance) between
the identity of the input face and that of the largest face detected in the generated image; an image with no
detectable face scores 0 and is counted (a method that draws no face must not look better by being skipped). Text
alignment: CLIP-T (100 × cosine, floored at 0) between the image and the prompt with S* read as clip.person_words
("a person").
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class ImageScore:
    face: str  # the test face's name
    category: str
    prompt: str
    index: int  # image i of this face and prompt (seed = eval.seed + i)
    face_similarity: float  # 0 when no face was detected
    text_alignment: float
    no_face: bool
    head_box_iou: float | None = None  # with eval.head_box: IoU of the asked box and the detected face's (0: none)


def face_similarities(recognizer, reference: np.ndarray, images) -> tuple[list[float], list[bool]]:
    """(similarity to `reference` per image, whether the image had no detectable face)."""
    return recognizer.similarities(list(images), [reference] * len(images))


def head_box_ious(recognizer, images, head_box) -> list[float]:
    """Per image, the IoU between the asked head box (x, y, w, h) and the largest detected face's box; 0 without one."""
    from facegen.core.control import box_iou

    out = []
    for img in images:
        faces = recognizer.detect(np.asarray(img))
        if not faces:
            out.append(0.0)
            continue
        x1, y1, x2, y2 = (float(v) for v in faces[0].bbox)
        out.append(box_iou(head_box, (x1, y1, x2 - x1, y2 - y1)))
    return out


def text_alignments(clip, images, prompt: str) -> list[float]:
    """CLIP-T of each image against the prompt as the scorer reads it (S* → clip.person_words)."""
    text = clip.reading(prompt)
    return [float(s) for s in clip.score(list(images), [text] * len(images))]


def _mean(rows: list[ImageScore]) -> dict:
    n = len(rows)
    return {
        "face_similarity": float(np.mean([r.face_similarity for r in rows])) if n else math.nan,
        "text_alignment": float(np.mean([r.text_alignment for r in rows])) if n else math.nan,
        "no_face": sum(r.no_face for r in rows),
        "images": n,
        "no_face_rate": sum(r.no_face for r in rows) / n if n else math.nan,
    } | _mean_iou(rows)


def _mean_iou(rows: list[ImageScore]) -> dict:
    ious = [r.head_box_iou for r in rows if r.head_box_iou is not None]
    return {"head_box_iou": float(np.mean(ious))} if ious else {}


def summarize(rows: list[ImageScore]) -> dict:
    """metrics.json's numbers: overall, per prompt, per category, per face."""
    groups = {"per_prompt": defaultdict(list), "per_category": defaultdict(list), "per_face": defaultdict(list)}
    for r in rows:
        groups["per_prompt"][r.prompt].append(r)
        groups["per_category"][r.category].append(r)
        groups["per_face"][r.face].append(r)
    return {"overall": _mean(rows), **{k: {name: _mean(v) for name, v in g.items()} for k, g in groups.items()}}


def rows_to_json(rows: list[ImageScore]) -> list[dict]:
    return [asdict(r) for r in rows]
