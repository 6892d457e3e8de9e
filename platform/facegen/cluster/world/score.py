"""Scoring drawings of the world's identities with the project's face protocol (the face stack's recognizer and its
metric: buffalo_s ArcFace cosine, or dlib's 1 − Euclidean distance under face.model=dlib).

The world's images are aligned faces (the ArcFace template), so each is embedded directly, without detection — the
protocol's rule for aligned crops. References are each identity's plain blend at the drawings' size. For drawings
meant to show identity i of a group of N (every figure is per identity first, then averaged over identities, and its
interval is a bootstrap over identities):
  identification   is i the nearest of the group's N references?  chance = 1/N
  mean_rank        the rank of i's reference among the N (1 = nearest)
  face_sim         similarity to i's reference (the metric's)
  closer           is the drawing closer to i's reference than to the reference of the nearest *training* identity?
                   (held-out only: what no lookup of a known person can give)
  black_and_white  1 − colourfulness / the world's median colourfulness (clipped to [0, 1]): the edit's effect is
                   its rise from the plain prompt to the edited one, so grey noise for both scores 0
"""
from __future__ import annotations

import numpy as np

from facegen.cluster.world.people import colourfulness


def embed(analyzer, images: np.ndarray) -> np.ndarray:
    """…×H×W×3 uint8 → …×D embeddings (the analyzer's metric's kind)."""
    flat = images.reshape(-1, *images.shape[-3:])
    return analyzer.embed_aligned(list(flat)).reshape(*images.shape[:-3], -1)


def identify(embeddings: np.ndarray, references: np.ndarray, truth: np.ndarray, metric) -> dict[str, np.ndarray]:
    """embeddings N×K×D of drawings, references G×D, truth N (index of each row's identity among the references),
    the face stack's metric → per identity (N): identification, mean_rank, face_sim (means over its K drawings)."""
    n, k, d = embeddings.shape
    sims = metric.similarity_matrix(embeddings.reshape(n * k, d), references).reshape(n, k, -1)  # N×K×G
    own = np.take_along_axis(sims, truth[:, None, None], axis=2)[..., 0]  # N×K
    rank = 1 + (sims > own[..., None]).sum(axis=2)
    return {"identification": (rank == 1).mean(axis=1), "mean_rank": rank.mean(axis=1), "face_sim": own.mean(axis=1)}


def closer(embeddings: np.ndarray, own: np.ndarray, other: np.ndarray, metric) -> np.ndarray:
    """embeddings N×K×D, own N×D, other N×D → per identity, the share of its drawings closer to `own` (by `metric`)."""
    a = np.stack([metric.similarity_matrix(e, o[None])[:, 0] for e, o in zip(embeddings, own)])
    b = np.stack([metric.similarity_matrix(e, o[None])[:, 0] for e, o in zip(embeddings, other)])
    return (a > b).mean(axis=1)


def black_and_white(images: np.ndarray, median_colourfulness: float) -> np.ndarray:
    """…×H×W×3 → … scores in [0, 1] (1 = no colour at all)."""
    flat = images.reshape(-1, *images.shape[-3:])
    score = 1 - np.clip(colourfulness(flat) / max(median_colourfulness, 1e-6), 0, 1)
    return score.reshape(images.shape[:-3])


def bootstrap(values: np.ndarray, resamples: int, seed: int) -> list[float]:
    """95 % percentile interval of the mean of per-identity `values`, resampling identities."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def summary(per_identity: dict[str, np.ndarray], resamples: int, seed: int) -> dict:
    """{identification, ci95, face_sim, mean_rank} from identify()'s per-identity arrays."""
    return {"identification": _r(per_identity["identification"].mean()),
            "ci95": bootstrap(per_identity["identification"], resamples, seed),
            "face_sim": _r(per_identity["face_sim"].mean()), "mean_rank": _r(per_identity["mean_rank"].mean())}


def _r(x) -> float:
    return round(float(x), 4)
