"""The dlib backend (`face.model: dlib`): the license-clean face stack.

  detector     dlib's HOG + linear SVM frontal face detector: dlib's own code (Boost Software License), no weight
               file. Run on the photo shrunk to twice `face.det_size` on its long side (1280 px by default: HOG
               needs larger faces than SCRFD), upsampled `face.upsample` times (HOG finds faces from 80 px; each
               upsampling halves that).
  landmarks    shape_predictor_5_face_landmarks.dat (CC0): four eye corners and the bottom of the nose.
  recognizer   dlib_face_recognition_resnet_model_v1.dat (CC0): 128-d, Euclidean distance < 0.6 ⇔ same person.

Both .dat files come from the `face_recognition_models` package (its directory, never its module: it imports
pkg_resources and offers the 68-point predictor, trained on iBUG 300-W and not licensed for commercial use — this
backend names only the two CC0 files, and a test watches that nothing else there is opened) or from `face.root`, a
directory holding them. Each is verified against its sha256 before it is loaded.

dlib's five points are not ArcFace's. The crops every encoder reads stay on the ArcFace template: a similarity
transform fitted on three points — the two eye centres (mean of each eye's corners) and the nose bottom — onto
DLIB_TEMPLATE, calibrated against SCRFD's landmarks on the photos facegen's dependencies ship (bench/faces.py, "dlib_calibration":
SCRFD's points land 4.2 px from the template on the 112 crop, leave-one-out, 29 faces). The same transform maps
ArcFace's five template points back into the photo as the face's `kps`, so pose maps and alignment read them as
they read SCRFD's. A face already aligned on the template is embedded through dlib's five points where calibration
puts them on the crop (DLIB_FIVE_ON_CROP): the same face embedded from its photo and from its 112 crop lies
0.12–0.20 apart on the shipped photos, a third of the same-person threshold (tests/unit/test_face_dlib.py holds
the astronaut under 0.25)."""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from facegen.core.errors import ModelNotFound
from facegen.core.face.align import ARCFACE_TEMPLATE
from facegen.core.face.backend import DetectedFace, FaceBackend, FaceMetric

PREDICTOR = "shape_predictor_5_face_landmarks.dat"
RECOGNIZER = "dlib_face_recognition_resnet_model_v1.dat"
# The CC0 files' digests (face_recognition_models 0.3.0 ships these bytes): a swapped file is refused before dlib
# parses it. `face.sha256` may pin other copies (a directory given as face.root).
DLIB_SHA256 = {
    PREDICTOR: "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    RECOGNIZER: "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}
# Where the left eye centre, the right eye centre and the nose bottom sit on the 112×112 ArcFace crop.
DLIB_TEMPLATE = np.array([[36.22, 54.02], [71.57, 53.67], [53.63, 82.07]], np.float64)
# dlib's five points (right eye outer/inner corner, left eye outer/inner corner, nose bottom, in dlib's order) on it.
DLIB_FIVE_ON_CROP = np.array([[78.24, 53.24], [64.42, 54.17], [29.64, 53.80], [43.29, 54.35], [53.62, 81.98]],
                             np.float64)


def _packaged_models() -> Path | None:
    """face_recognition_models' model directory, found without importing the package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def three_points(five: np.ndarray) -> np.ndarray:
    """dlib's five points → (left eye centre, right eye centre, nose bottom) in image order (left = smaller x)."""
    five = np.asarray(five, np.float64)
    return np.stack([five[2:4].mean(0), five[0:2].mean(0), five[4]])


def arcface_kps(five: np.ndarray) -> np.ndarray:
    """ArcFace's five template points, mapped into the photo by the calibrated three-point fit."""
    from skimage.transform import SimilarityTransform

    to_photo = SimilarityTransform.from_estimate(DLIB_TEMPLATE, three_points(five))
    if not to_photo:
        return np.full((5, 2), np.nan, np.float32)  # degenerate points: alignment refuses them with a clear error
    return to_photo(ARCFACE_TEMPLATE.astype(np.float64)).astype(np.float32)


class DlibBackend(FaceBackend):
    family = "dlib"
    # similarity = 1 − Euclidean distance: dlib's 0.6 same-person distance is similarity 0.4
    metric = FaceMetric(name="dlib similarity (1 − Euclidean distance)", dim=128, geometry="euclidean",
                        same_person=0.4)
    default_det_thresh = 0.0  # the HOG SVM's own decision boundary

    def __init__(self, config):
        super().__init__(config)
        self._models = None
        self._lock = threading.Lock()
        # dlib's detector, predictor and network keep working buffers: one call at a time per backend (a service
        # replica may run requests on several threads)
        self._busy = threading.Lock()

    def model_dir(self) -> Path:
        if self.config.root:
            d = Path(self.config.root).expanduser()
        else:
            d = _packaged_models()
            if d is None:
                raise ModelNotFound("face.model=dlib needs the 'face_recognition_models' package (pip install "
                                    "face_recognition_models==0.3.0) or face.root set to a directory holding "
                                    f"{PREDICTOR} and {RECOGNIZER}")
        missing = [name for name in (PREDICTOR, RECOGNIZER) if not (d / name).is_file()]
        if missing:
            raise ModelNotFound(f"face.model=dlib: {', '.join(missing)} not found in {d}")
        return d

    def model_files(self) -> list[Path]:
        d = self.model_dir()
        return [d / PREDICTOR, d / RECOGNIZER]

    @property
    def models(self):
        """(HOG detector, 5-point predictor, recognizer), loaded once after their sha256 is checked."""
        with self._lock:
            if self._models is None:
                try:
                    import dlib
                except ImportError:
                    raise ModelNotFound("face.model=dlib needs the 'dlib-bin' package: pip install dlib-bin") from None
                from facegen.core.pins import verify_sha256

                d = self.model_dir()
                # the two CC0 files only; a pin in face.sha256 for either replaces the built-in one
                pins = {**DLIB_SHA256, **{k: v for k, v in self.config.sha256.items() if k in DLIB_SHA256}}
                verify_sha256(d, pins, "the dlib face models")
                self._models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(d / PREDICTOR)),
                                dlib.face_recognition_model_v1(str(d / RECOGNIZER)))
            return self._models

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        import cv2

        detector, predictor, _ = self.models
        h, w = rgb.shape[:2]
        scale = min(1.0, 2 * self.config.det_size / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                   interpolation=cv2.INTER_AREA)
        small = np.ascontiguousarray(small, np.uint8)
        with self._busy:
            rects, scores, _ = detector.run(small, int(self.config.upsample), self.det_thresh)
            shapes = [predictor(small, rect) for rect in rects]
        faces = []
        for rect, score, shape in zip(rects, scores, shapes):
            five = np.array([(p.x, p.y) for p in shape.parts()], np.float64) / scale
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float64) / scale
            faces.append(DetectedFace(bbox=box.astype(np.float32), score=float(score), kps=arcface_kps(five),
                                      embedding=None, landmarks=five.astype(np.float32)))
        return faces

    def embed(self, rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """dlib's own chip (150 px, from its five points) on the photo at full resolution."""
        _, _, recognizer = self.models
        shapes = [_shape(f.bbox, f.landmarks) for f in faces]
        image = np.ascontiguousarray(rgb, np.uint8)
        with self._busy:
            return self.metric.finish(np.asarray([recognizer.compute_face_descriptor(image, s) for s in shapes]))

    def embed_aligned(self, crops: list[np.ndarray]) -> np.ndarray:
        _, _, recognizer = self.models
        out = []
        with self._busy:
            for crop in crops:
                size = crop.shape[0]
                five = DLIB_FIVE_ON_CROP * (size / 112.0)
                out.append(recognizer.compute_face_descriptor(np.ascontiguousarray(crop, np.uint8),
                                                              _shape((0, 0, size, size), five)))
        return self.metric.finish(np.asarray(out).reshape(len(crops), -1))


def _shape(box, five):
    """A dlib full_object_detection from a box and dlib's five points (what its recognizer takes)."""
    import dlib

    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return dlib.full_object_detection(dlib.rectangle(x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)),
                                      [dlib.point(int(round(float(x))), int(round(float(y)))) for x, y in five])
