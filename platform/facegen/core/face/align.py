"""5-point face alignment: a similarity transform onto the ArcFace template.

The 112×112 template is the one every insightface recognition model was trained on, so identity embeddings need
exactly it. Generators want more of the head and some background, so `margin` zooms out around the same template.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from facegen.core.errors import NoFaceFound

# Eye centres, nose tip, mouth corners of a 112×112 ArcFace crop (insightface's `arcface_dst`).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def alignment_matrix(kps: np.ndarray, size: int = 112, margin: float = 0.0) -> np.ndarray:
    """2×3 matrix mapping the image onto a size×size crop; margin=0.5 adds half the face width of context per side."""
    if kps is None or np.asarray(kps).shape != (5, 2):
        raise ValueError("alignment needs 5 landmarks (eyes, nose, mouth corners) as a 5×2 array")
    dst = (ARCFACE_TEMPLATE - 56.0) / (1.0 + 2.0 * margin) * (size / 112.0) + size / 2.0
    # Least-squares similarity (Umeyama), the estimate insightface's own norm_crop uses.
    points = np.asarray(kps, np.float64)
    tform = SimilarityTransform.from_estimate(points, dst.astype(np.float64)) if np.isfinite(points).all() else None
    if not tform or not np.isfinite(tform.params).all():
        # A detector can return landmarks on top of each other for a tiny or smeared face: no usable face.
        raise NoFaceFound("the face's landmarks are degenerate (a face too small or blurred to align): use a clearer photo")
    return tform.params[:2].astype(np.float32)


def align_face(image: np.ndarray, kps: np.ndarray, size: int = 112, margin: float = 0.0) -> np.ndarray:
    """Warp an RGB image so the face's landmarks sit on the (zoomed-out) ArcFace template; returns size×size×3."""
    matrix = alignment_matrix(kps, size, margin)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
