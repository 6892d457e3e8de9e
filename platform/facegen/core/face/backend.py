"""What a face stack is to the rest of facegen: a `FaceBackend` (detect, landmarks, embed) and its `FaceMetric` (what
"similar" means for its embeddings, and above what two faces are one person).

Two backends sit behind `FaceAnalyzer` (analyzer.py), chosen by `face.model` (registry.py):

  insightface  buffalo_s / buffalo_l / antelopev2 or a directory of their ONNX files: SCRFD + ArcFace, 512-d,
               cosine. The packs' weights are licensed for non-commercial research only.
  dlib         `face.model: dlib`: dlib's HOG detector (Boost licence, dlib's own code), its 5-point shape predictor
               and its ResNet face recognizer v1 (both CC0), 128-d, Euclidean distance. The commercial-safe profile
               for weights (docs/models.md "Licences").

Every backend reports landmarks in ArcFace's five-point convention (eye centres, nose tip, mouth corners), so the
crops every encoder reads, the pose maps and the world's views are built the same way whatever the backend. Every
number that means "same person" comes from the backend's metric, never from a literal."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegen.core.face.config import FaceAnalyzerConfig


@dataclass
class DetectedFace:
    bbox: np.ndarray  # x1, y1, x2, y2 in image pixels
    score: float
    kps: np.ndarray  # 5×2 landmarks in ArcFace's convention: eye centres, nose tip, mouth corners
    embedding: np.ndarray | None  # the face_embedding (the backend metric's kind); None if not asked for
    landmarks: np.ndarray | None = None  # the backend's own landmarks where they differ from kps (dlib's five)

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))

    def to_json(self) -> dict:
        return {"bbox": [round(float(v), 1) for v in self.bbox], "score": round(float(self.score), 4)}


@dataclass(frozen=True)
class FaceMetric:
    """How a backend's embeddings compare. `similarity` is higher for more alike faces, whatever the geometry:
    cosine for ArcFace; 1 − Euclidean distance for dlib (its recognizer was trained for distance < 0.6 ⇔ same person,
    and its vectors are not centred: strangers sit at cosine 0.8–0.95)."""

    name: str  # what reports call the similarity
    dim: int  # embedding width
    geometry: str  # "cosine" (unit vectors) | "euclidean" (raw vectors)
    same_person: float  # similarity above which two faces are taken for one person

    @property
    def normalised(self) -> bool:
        return self.geometry == "cosine"

    def similarity_matrix(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """N×D, M×D → N×M similarities."""
        a, b = np.atleast_2d(np.asarray(a, np.float32)), np.atleast_2d(np.asarray(b, np.float32))
        if self.geometry == "cosine":
            a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
            b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
            return a @ b.T
        return 1.0 - np.stack([np.linalg.norm(b - row, axis=1) for row in a])  # exact: a face is 1.0 to itself

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(self.similarity_matrix(a, b)[0, 0])

    def finish(self, embeddings: np.ndarray) -> np.ndarray:
        """A recognizer's raw output rows as this metric keeps them (unit length for cosine, as they are otherwise)."""
        e = np.asarray(embeddings, np.float32)
        if self.normalised:
            e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
        return e

    def mean(self, embeddings: np.ndarray) -> np.ndarray:
        """Several photos of one person → one embedding of the same kind."""
        return self.finish(np.mean(np.asarray(embeddings, np.float32), axis=0))


class FaceBackend:
    """One face stack. Subclasses set `family`, `metric`, `default_det_thresh` and implement `detect`, `embed` and
    `embed_aligned`; `model_files()` lists the weight files it opens (the licence test watches exactly those)."""

    family: str = ""
    metric: FaceMetric
    default_det_thresh: float = 0.0

    def __init__(self, config: FaceAnalyzerConfig):
        self.config = config

    @property
    def det_thresh(self) -> float:
        return self.default_det_thresh if self.config.det_thresh is None else float(self.config.det_thresh)

    def detect(self, rgb: np.ndarray) -> list:
        """DetectedFace per face found (bbox, score, ArcFace-convention kps), unembedded."""
        raise NotImplementedError

    def embed(self, rgb: np.ndarray, faces: list) -> np.ndarray:
        """Each face's embedding (rows as `metric.finish` keeps them) from the photo it was found in."""
        raise NotImplementedError

    def embed_aligned(self, crops: list[np.ndarray]) -> np.ndarray:
        """Embeddings of faces already aligned on the ArcFace template (RGB, any size)."""
        raise NotImplementedError
