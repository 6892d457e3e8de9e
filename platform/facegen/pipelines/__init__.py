"""Diffusion pipelines conditioned on a face."""
from facegen.pipelines.dreamidentity import DreamIdentityPipeline, DreamIdentityPipelineOutput

__all__ = ["DreamIdentityPipeline", "DreamIdentityPipelineOutput"]


def faceclip_pipeline_or_none():
    """The FaceCLIP-SDXL pipeline class, once it is part of the build."""
    try:
        from facegen.pipelines.faceclip_sdxl import FaceCLIPSDXLPipeline
    except ModuleNotFoundError:
        return None
    return FaceCLIPSDXLPipeline
