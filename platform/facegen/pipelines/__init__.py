"""Diffusion pipelines conditioned on a face."""
from __future__ import annotations

import os

from facegen.pipelines.dreamidentity import DreamIdentityPipeline, DreamIdentityPipelineOutput
from facegen.pipelines.faceclip_sdxl import FaceCLIPIdentity, FaceCLIPSDXLPipeline

METHODS = {"dreamidentity": DreamIdentityPipeline, "faceclip": FaceCLIPSDXLPipeline}


def load_pipeline(method: str, preset, model: str | os.PathLike | None = None, torch_dtype=None):
    """The pipeline of a method ("dreamidentity" | "faceclip") from a preset (name, file or Preset); `model` is an
    encoder exported by a training job, replacing the preset's."""
    return METHODS[method].from_preset(preset, model=model, torch_dtype=torch_dtype)


__all__ = ["METHODS", "DreamIdentityPipeline", "DreamIdentityPipelineOutput", "FaceCLIPIdentity",
           "FaceCLIPSDXLPipeline", "load_pipeline"]
