"""facegen: identity-preserving portrait generation (DreamIdentity, FaceCLIP, FaceT5-FLUX) on Ray.

`import facegen` loads nothing else: the names below import their module (torch, diffusers) on first use, so the
CLI and Ray workers that only read data stay cheap.
"""
__version__ = "0.2.0"

_EXPORTS = {
    "DreamIdentityPipeline": "facegen.core.methods.dreamidentity.pipeline",
    "IdTokens": "facegen.core.methods.dreamidentity.pipeline",
    "M2Encoder": "facegen.core.methods.dreamidentity.encoder",
    "FaceCLIPSDXLPipeline": "facegen.core.methods.faceclip.pipeline",
    "FaceCLIPCondition": "facegen.core.methods.faceclip.pipeline",
    "FaceCLIPEncoder": "facegen.core.methods.faceclip.encoder",
    "FaceT5FluxPipeline": "facegen.core.methods.facet5.pipeline",
    "FaceT5Condition": "facegen.core.methods.facet5.pipeline",
    "FaceT5FluxEncoder": "facegen.core.methods.facet5.encoder",
    "ClipScorer": "facegen.core.models.clip_scorer",
    "FaceViT": "facegen.core.models.face_vit",
    "FaceAnalyzer": "facegen.core.face.analyzer",
    "Preset": "facegen.core.config",
    "load_preset": "facegen.core.config",
    "load_pipeline": "facegen.core.methods",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facegen' has no attribute {name!r}")
