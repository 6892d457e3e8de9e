"""One generation request, resolved once: the sampling values with the method's defaults filled in and checked,
and the control (the ControlNet's image, made once, with its strength and window). The CLI, the Python API and the
HTTP service each build one `GenerationPlan` per request; the pipeline draws it and never resolves it again.
Plain data: importing it loads no torch."""
from __future__ import annotations

from dataclasses import dataclass

from facegen.core.control import Control


@dataclass(frozen=True)
class GenerationPlan:
    steps: int
    guidance_scale: float
    width: int
    height: int
    negative_prompt: str | list[str] = ""
    num_images: int = 1  # per prompt
    control: Control | None = None

    @classmethod
    def from_sampling(cls, sampling, num_images: int = 1, control: Control | None = None) -> GenerationPlan:
        """From a SamplingConfig already resolved (`SamplingConfig.resolve`: defaults filled in, bounds checked)."""
        from facegen.core.sampling import check_sampling

        check_sampling(num_images=num_images)
        return cls(steps=sampling.steps, guidance_scale=sampling.guidance_scale, width=sampling.width,
                   height=sampling.height, negative_prompt=sampling.negative_prompt, num_images=num_images,
                   control=control)
