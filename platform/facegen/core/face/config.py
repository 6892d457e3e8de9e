"""The face analyzer's settings (the preset's `face:` section). Plain data: importing it loads no model code."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FaceAnalyzerConfig:
    # "dlib" (the CC0 stack: dlib's HOG, 5-point predictor and ResNet recognizer), or an insightface model pack name
    # (under root/models/) or a directory of its ONNX files (non-commercial weights). docs/models.md "Licences".
    model: str = "buffalo_s"
    root: str | None = None  # insightface: model root, None = facegen's cache; dlib: a directory of its two .dat files
    det_size: int = 640  # insightface: the detector's input side; dlib: photos are shrunk to twice this first
    det_thresh: float | None = None  # None = the backend's own (SCRFD 0.5, dlib's HOG SVM 0.0)
    upsample: int = 1  # dlib: HOG upsamplings (each halves the smallest face found: 80 px → 40 px at 1)
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    sha256: dict[str, str] = field(default_factory=dict)  # pins for the model files (file name → hex)

    def __post_init__(self):
        from facegen.core.errors import ConfigError

        # each HOG upsampling quadruples the pixels searched: past 2, one photo costs seconds to minutes
        if not 0 <= self.upsample <= 2:
            raise ConfigError(f"face.upsample {self.upsample}: use 0, 1 or 2")
        if not 64 <= self.det_size <= 4096:
            raise ConfigError(f"face.det_size {self.det_size}: use a side from 64 to 4096")
