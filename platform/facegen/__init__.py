"""facegen: identity-preserving portrait generation (DreamIdentity, FaceCLIP, FaceT5-FLUX) on Ray.

`import facegen` loads nothing else: the names below import their module (torch, diffusers) on first use, so the
CLI and Ray workers that only read data stay cheap.
"""
__version__ = "0.2.0"

_EXPORTS = {
    "DreamIdentityPipeline": "facegen.methods.dreamidentity.pipeline",
    "IdTokens": "facegen.methods.dreamidentity.pipeline",
    "M2Encoder": "facegen.methods.dreamidentity.encoder",
    "FaceCLIPSDXLPipeline": "facegen.methods.faceclip.pipeline",
    "FaceCLIPCondition": "facegen.methods.faceclip.pipeline",
    "FaceCLIPEncoder": "facegen.methods.faceclip.encoder",
    "FaceT5FluxPipeline": "facegen.methods.facet5.pipeline",
    "FaceT5Condition": "facegen.methods.facet5.pipeline",
    "FaceT5FluxEncoder": "facegen.methods.facet5.encoder",
    "ClipScorer": "facegen.models.clip_scorer",
    "FaceViT": "facegen.models.face_vit",
    "FaceAnalyzer": "facegen.face.analyzer",
    "Preset": "facegen.config",
    "load_preset": "facegen.config",
    "load_pipeline": "facegen.methods",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facegen' has no attribute {name!r}")
