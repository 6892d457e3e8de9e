"""Which generation requests can share one diffusion batch: same method and the same sampling settings.

`@serve.batch` hands a generator replica a list of queued requests; `group_compatible` splits it into groups that
run as one pipeline call each (prompts, identities and seeds stacked), keeping each request's place.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationJob:
    prompt: str
    identity: dict  # the method's identity tensors (numpy)
    seed: int
    num_images: int = 1
    steps: int = 30
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    negative_prompt: str = ""
    extra: dict = field(default_factory=dict)

    def batch_key(self) -> tuple:
        return (self.steps, round(self.guidance_scale, 6), self.width, self.height, self.negative_prompt)


def group_compatible(jobs: list[GenerationJob], max_images: int) -> list[list[int]]:
    """Indices of `jobs` grouped by batch key, in arrival order, each group at most `max_images` images."""
    groups: dict[tuple, list[list[int]]] = {}
    order: list[list[int]] = []
    for i, job in enumerate(jobs):
        bucket = groups.setdefault(job.batch_key(), [])
        if not bucket or sum(jobs[j].num_images for j in bucket[-1]) + job.num_images > max_images:
            bucket.append([])
            order.append(bucket[-1])
        bucket[-1].append(i)
    return order
