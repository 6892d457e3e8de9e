"""Which generation requests can share one diffusion batch, and how a failed batch is isolated.

`@serve.batch` hands a generator replica a list of queued requests; `group_compatible` splits it into groups that
run as one pipeline call each (same sampling settings; prompts, identities and seeds stacked), keeping each request's
place. `draw_groups` runs the groups; a group whose call fails — for any reason: a CUDA out-of-memory, an error from the
model, or one request's input that only the model can refuse — is retried one request at a time, so only a request
that still fails alone gets an error and the others in its batch succeed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from facegen.core.errors import FacegenError, GenerationFailed
from facegen.core.plan import GenerationPlan

log = logging.getLogger("facegen.serve")


@dataclass
class BatchingConfig:
    """A generator's @serve.batch settings, from its deployment's `user_config` (changeable without a redeploy)."""
    max_batch_size: int = 4  # requests per batch (each up to 4 images; a pipeline call draws at most max_images)
    batch_wait_timeout_s: float = 0.1  # how long a batch waits to fill once its first request is in

    def __post_init__(self):
        if not isinstance(self.max_batch_size, int) or not 1 <= self.max_batch_size <= 64:
            raise ValueError(f"user_config.max_batch_size must be an integer in 1..64, got {self.max_batch_size!r}")
        if not isinstance(self.batch_wait_timeout_s, (int, float)) or not 0 <= self.batch_wait_timeout_s <= 10:
            raise ValueError(f"user_config.batch_wait_timeout_s must be 0..10 seconds, got {self.batch_wait_timeout_s!r}")


@dataclass(frozen=True)
class DrawRequest:
    """What the ingress hands a generator replica: one request, resolved once by the ingress (the sampling values
    with the method's defaults, the control image made, in `plan`), and the identity token the replica opens."""

    prompt: str
    identity_token: str
    seed: int
    plan: GenerationPlan


@dataclass
class GenerationJob:
    """A DrawRequest whose token the replica opened: the identity as arrays (Identity.to_arrays)."""

    prompt: str
    identity: dict
    seed: int
    plan: GenerationPlan

    @property
    def num_images(self) -> int:
        return self.plan.num_images

    def batch_key(self) -> tuple:
        # Control images may differ within a batch (one per image); whether there is control and how strong may not.
        p = self.plan
        control = None if p.control is None else (round(p.control.scale, 6), p.control.start, p.control.end)
        return (p.steps, round(p.guidance_scale, 6), p.width, p.height, p.negative_prompt, control)


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


def draw_groups(jobs: list[GenerationJob], max_images: int,
                draw: Callable[[list[GenerationJob]], list]) -> list[tuple[list, int] | Exception]:
    """Per job: (its images, the size of the batch it was drawn in), or the exception to answer it with."""
    results: list = [None] * len(jobs)
    for group in group_compatible(jobs, max_images):
        members = [jobs[i] for i in group]
        try:
            images = draw(members)
        except Exception as e:  # noqa: BLE001 — one request's error must never reach the others in its batch
            if len(group) > 1:  # isolate the request that causes it: each is drawn alone
                log.warning("a batch of %d failed (%s): drawing its requests one at a time", len(group), type(e).__name__)
                for i in group:
                    results[i] = draw_groups([jobs[i]], max_images, draw)[0]
            elif isinstance(e, FacegenError):  # the user's input
                results[group[0]] = e
            else:  # the model failed on it alone (out of memory, …)
                log.error("generation failed: %s", type(e).__name__)
                results[group[0]] = GenerationFailed(f"the model could not draw this request ({type(e).__name__}): "
                                                     f"retry, or ask for fewer or smaller images")
            continue
        for i, job in zip(group, members):
            results[i] = (images[:job.num_images], len(group))
            images = images[job.num_images:]
    return results
