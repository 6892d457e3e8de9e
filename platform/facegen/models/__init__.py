"""Model definitions: the face ViT and the M² encoder (and, later, the FaceCLIP encoder)."""
from facegen.models.face_vit import FaceViT, load_arcface_checkpoint
from facegen.models.m2 import M2Encoder

__all__ = ["FaceViT", "M2Encoder", "load_arcface_checkpoint"]
