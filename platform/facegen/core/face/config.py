"""The face analyzer's settings (the preset's `face:` section). Plain data: importing it loads no model code."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FaceAnalyzerConfig:
    model: str = "buffalo_s"  # an insightface model pack name (under root/models/) or a directory of its ONNX files
    root: str | None = None  # insightface model root; None = facegen's cache (FACEGEN_CACHE)
    det_size: int = 640
    det_thresh: float = 0.5
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    sha256: dict[str, str] = field(default_factory=dict)  # pins for the pack's ONNX files (file name → hex)
