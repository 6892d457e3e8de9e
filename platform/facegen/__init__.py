"""facegen: identity-preserving portrait generation (DreamIdentity, FaceCLIP) on Ray.

Heavy imports (torch, diffusers) happen on first use of a name, so `import facegen` stays cheap for the CLI
and for Ray workers that only read data.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "DreamIdentityPipeline": "facegen.pipelines.dreamidentity",
    "FaceCLIPSDXLPipeline": "facegen.pipelines.faceclip_sdxl",
    "FaceCLIPEncoder": "facegen.models.faceclip",
    "ClipScorer": "facegen.models.clip_scorer",
    "M2Encoder": "facegen.models.m2",
    "FaceViT": "facegen.models.face_vit",
    "FaceAnalyzer": "facegen.face.analyzer",
    "Preset": "facegen.config",
    "load_preset": "facegen.config",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facegen' has no attribute {name!r}")
