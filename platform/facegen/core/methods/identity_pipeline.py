"""The base every method's pipeline is built on: a diffusers `DiffusionPipeline` with the method contract's shared
parts — `MethodPipeline` (preset loading, the input check, the face encoder), `IdentityDiffusionCall` (the shared
`__call__`), `ControlComponent` (scene switch) and `FaceAnalyzerComponent` (the face stack as a component). A method's
pipeline subclasses it and writes only what is its own (docs/DESIGN.md "Methods")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from facegen.core.methods.pipeline_utils import (
    ControlComponent,
    FaceAnalyzerComponent,
    IdentityDiffusionCall,
    MethodPipeline,
)


@dataclass
class IdentityPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray


class IdentityPipeline(MethodPipeline, IdentityDiffusionCall, ControlComponent, FaceAnalyzerComponent,
                       DiffusionPipeline):
    _optional_components = ["face_analyzer", "controlnet"]
    output_class = IdentityPipelineOutput
