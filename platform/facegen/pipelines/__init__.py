"""Diffusion pipelines conditioned on a face."""
from facegen.pipelines.dreamidentity import DreamIdentityPipeline, DreamIdentityPipelineOutput
from facegen.pipelines.faceclip_sdxl import FaceCLIPIdentity, FaceCLIPSDXLPipeline

__all__ = ["DreamIdentityPipeline", "DreamIdentityPipelineOutput", "FaceCLIPIdentity", "FaceCLIPSDXLPipeline"]

