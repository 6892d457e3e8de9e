"""Scoring drawings of the world's people with the project's face protocol (buffalo_s ArcFace).

The world's images are aligned faces (the ArcFace template), so each is embedded directly, without detection — the
protocol's rule for aligned crops. For each image of person i:
  identification: is i the nearest of the N references (cosine)?  chance = 1/N
  face_sim:       cosine to person i's reference
  edit_obeyed:    (edited prompts) is the image black and white — its colourfulness under the world's threshold?
"""
from __future__ import annotations

import numpy as np

from facegen.cluster.world.people import colourfulness


def edit_threshold(colour_views: np.ndarray) -> float:
    """Half the median colourfulness of the world's own colour views: a drawing below it reads as black and white."""
    return 0.5 * float(np.median(colourfulness(colour_views)))


def embed(analyzer, images: np.ndarray) -> np.ndarray:
    return analyzer.embed_aligned(list(images))


def score_images(analyzer, images: np.ndarray, person: int, references: np.ndarray, threshold: float) -> dict:
    """Per-image scores of drawings meant to show `person` (index into references)."""
    sims = embed(analyzer, images) @ references.T
    return {"identified": (sims.argmax(axis=1) == person).tolist(), "face_sim": sims[:, person].tolist(),
            "black_and_white": (colourfulness(images) < threshold).tolist()}


def summarize(rows: list[dict], edited: bool) -> dict:
    """Mean identification and face similarity over rows of score_images; edit_obeyed for edited prompts."""
    ident = [v for r in rows for v in r["identified"]]
    sims = [v for r in rows for v in r["face_sim"]]
    bw = [v for r in rows for v in r["black_and_white"]]
    out = {"identification": _mean(ident), "face_sim": _mean(sims), "images": len(ident)}
    out["edit_obeyed" if edited else "black_and_white"] = _mean(bw)
    return out


def _mean(values) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None
