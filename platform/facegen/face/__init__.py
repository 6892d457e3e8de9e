"""Face detection, alignment and identity embedding."""
from facegen.face.align import ARCFACE_TEMPLATE, align_face
from facegen.face.analyzer import DetectedFace, FaceAnalyzer, cosine
from facegen.face.images import load_image

__all__ = ["ARCFACE_TEMPLATE", "DetectedFace", "FaceAnalyzer", "align_face", "cosine", "load_image"]
