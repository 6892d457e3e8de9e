"""Which backend a `face` section names, and what follows from it without loading any model: its metric, and
which published weights it may feed."""
from __future__ import annotations

from facegen.core.errors import ConfigError
from facegen.core.face.backend import FaceBackend, FaceMetric
from facegen.core.face.config import FaceAnalyzerConfig

DLIB = "dlib"


def backend_class(model: str) -> type[FaceBackend]:
    """The backend `face.model` names: "dlib", else insightface (a pack name or a directory of its ONNX files).
    Importing it loads no model."""
    from facegen.core.face.dlib_backend import DlibBackend
    from facegen.core.face.insightface_backend import InsightFaceBackend

    return DlibBackend if model == DLIB else InsightFaceBackend


def face_metric(config: FaceAnalyzerConfig | None) -> FaceMetric:
    """The metric of the backend a `face` section names, without loading it."""
    return backend_class((config or FaceAnalyzerConfig()).model).metric


def check_insightface_profile(config: FaceAnalyzerConfig | None, what: str) -> None:
    """Published weights trained on insightface's ArcFace (ByteDance's FaceCLIP and FaceT5) read only that stack:
    a ConfigError (not a crash) under any other."""
    family = backend_class((config or FaceAnalyzerConfig()).model).family
    if family != "insightface":
        raise ConfigError(
            f"{what} is insightface-profile only: it was trained on insightface's ArcFace (antelopev2) and its "
            f"licence is non-commercial, so face.model={config.model} cannot serve it. Use an insightface face "
            f"model (e.g. --set face.model=antelopev2), or train your own encoder with face.model={config.model}")
