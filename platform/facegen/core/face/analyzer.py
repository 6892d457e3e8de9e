"""Face detection, alignment and identity embedding, whatever the face stack: `FaceAnalyzer` is the one interface
the pipelines, jobs, evaluation, the world and the service use; the backend `face.model` names does the work
(backend.py: insightface's packs, or `dlib`, the license-clean stack), and its `metric` says what similar means.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from facegen.core.errors import NoFaceFound
from facegen.core.face.align import align_face
from facegen.core.face.backend import DetectedFace, FaceBackend, FaceMetric
from facegen.core.face.config import FaceAnalyzerConfig
from facegen.core.face.images import ImageInput, load_image
from facegen.core.face.registry import backend_class

__all__ = ["DetectedFace", "FaceAnalyzer", "FaceMetric", "cosine"]


# A photo where nothing was found is padded and tried once more (tight crops need context): only for images with a
# sane aspect ratio, shrunk to this side first, so the retry's memory is bounded whatever the upload.
PAD_RETRY_SIDE = 1024
PAD_RETRY_MAX_SIDE = 8  # long side ÷ short side
# Faces kept per photo, largest first: a grid of hundreds of faces is a photo of a crowd, not of the person.
MAX_FACES = 32


class FaceAnalyzer:
    """Detect faces, pick the largest, align it and embed it (its face_embedding), with the backend `face.model`
    names."""

    Config = FaceAnalyzerConfig

    def __init__(self, config: FaceAnalyzerConfig | None = None):
        self.config = config or FaceAnalyzerConfig()
        self.backend: FaceBackend = backend_class(self.config.model)(self.config)

    @property
    def metric(self) -> FaceMetric:
        """What the backend's embeddings mean: similarity, width, the same-person threshold."""
        return self.backend.metric

    # -- detection ----------------------------------------------------------------------------------------------
    def detect(self, image: ImageInput, embed: str = "largest") -> list[DetectedFace]:
        """Faces in the image, largest first (at most MAX_FACES). Only the largest is embedded unless embed="all"
        (a photo of a crowd costs one recognizer run, not hundreds); the others have embedding None. Tight crops
        (e.g. already aligned 112×112 faces) are padded and tried again, since the detector needs some context."""
        rgb = load_image(image)
        faces = self._detect(rgb)
        h, w = rgb.shape[:2]
        if not faces and max(h, w) <= PAD_RETRY_MAX_SIDE * min(h, w):
            faces = self._detect_padded(rgb)
        faces = sorted(faces, key=lambda f: f.area, reverse=True)[:MAX_FACES]
        self._embed(rgb, faces if embed == "all" else faces[:1])
        return faces

    def _detect_padded(self, rgb: np.ndarray) -> list[DetectedFace]:
        # The padded copy is bounded: the image is first shrunk so its long side is at most PAD_RETRY_SIDE (a tight
        # crop is small anyway), then padded by half that side — never more than 4 × PAD_RETRY_SIDE² pixels, however
        # large the upload.
        import cv2

        h, w = rgb.shape[:2]
        scale = min(1.0, PAD_RETRY_SIDE / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                   interpolation=cv2.INTER_AREA)
        pad = max(small.shape[:2]) // 2
        faces = self._detect(np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="constant"))
        for f in faces:
            f.bbox = (f.bbox - pad) / scale
            f.kps = (f.kps - pad) / scale
            if f.landmarks is not None:  # the backend's own points (dlib's), which its recognizer reads
                f.landmarks = (f.landmarks - pad) / scale
        return faces

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """The detector alone (boxes, scores, landmarks): the recognizer runs later, only on the faces asked for."""
        return self.backend.detect(rgb)

    def _embed(self, rgb: np.ndarray, faces: list[DetectedFace]) -> None:
        if not faces:
            return
        for f, e in zip(faces, self.backend.embed(rgb, faces)):
            f.embedding = e

    def largest(self, image: ImageInput, name: str = "the photo") -> tuple[np.ndarray, DetectedFace]:
        """(RGB image, its largest face); NoFaceFound if there is none. `name`: what errors call the photo (the
        request field it came in, e.g. face_images[2])."""
        rgb = load_image(image, name=name)
        faces = self.detect(rgb)
        if not faces:
            raise NoFaceFound(f"no face found in {name}: use a photo where one face is clearly visible")
        return rgb, faces[0]

    # -- identity ----------------------------------------------------------------------------------------------
    def face_embedding(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """The face_embedding of the largest face; several photos of one person give their mean (the metric's)."""
        embeddings = [self.largest(img, _name(img, i))[1].embedding for i, img in enumerate(_as_list(images))]
        return self.metric.mean(np.stack(embeddings))

    def aligned(self, image: ImageInput, size: int, margin: float = 0.0, name: str = "the photo") -> np.ndarray:
        """The largest face aligned on the ArcFace template (size×size×3 RGB)."""
        rgb, face = self.largest(image, name)
        return align_face(rgb, face.kps, size=size, margin=margin)

    def similarities(self, images: Sequence[ImageInput], references: Sequence[np.ndarray]) -> tuple[list[float], list[bool]]:
        """Per image: (the metric's similarity between its largest face's embedding and its reference, whether it
        had no face). An image with no detectable face scores 0 — the data filter's and the evaluation protocol's
        rule."""
        scores, missing = [], []
        for image, reference in zip(images, references, strict=True):
            faces = self.detect(image)
            scores.append(self.metric.similarity(faces[0].embedding, reference) if faces else 0.0)
            missing.append(not faces)
        return scores, missing

    def embed_aligned(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Face embeddings of faces that are already aligned crops on the ArcFace template (any size): for
        pre-aligned datasets and generators that draw no detectable face (the tiny preset)."""
        faces = list(faces)
        return self.backend.embed_aligned(faces) if faces else np.zeros((0, self.metric.dim), np.float32)

    # -- persistence (pipelines save the reference, not the ONNX files) ------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "config.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> FaceAnalyzer:
        from facegen.core.typed import from_dict

        data = json.loads((Path(directory) / "config.json").read_text())
        return cls(from_dict(FaceAnalyzerConfig, data, "face_analyzer"))


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        if not images:
            raise NoFaceFound("no photo given")
        return list(images)
    return [images]


def _name(img, i: int) -> str:
    return str(img) if isinstance(img, (str, os.PathLike)) else f"photo {i + 1}"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Plain cosine (CLIP features, ArcFace vectors); face embeddings compare through their analyzer's `metric`."""
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
