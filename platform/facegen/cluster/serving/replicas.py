"""The replicas behind the ingress: one face encoder for every served method, and one generator per served method.
Replicas are stateless: identities travel as encrypted, authenticated identity tokens (tokens.py).

    FaceEncoder               photos → detect + align + the method's face encoder → identity token (+ the pose)
    <Title>Generator          one per served method (@serve.batch): identity token + prompt → uint8 arrays; draws only
"""

import asyncio
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from ray import serve

from facegen.cluster.serving import tokens, watermark
from facegen.cluster.serving.batching import BatchingConfig, DrawRequest, GenerationJob, draw_groups
from facegen.cluster.workers import quiet_libraries
from facegen.core.errors import FacegenError
from facegen.core.methods import get_method


def public_name(ref: str | None) -> str:
    """A model reference as clients see it: hub ids and built-in models as they are, a server path by its last two
    parts (never the whole path)."""
    if not ref:
        return "fresh"
    if ":" in ref or (ref.count("/") == 1 and not Path(ref).expanduser().exists()):
        return ref
    return "/".join(Path(ref).parts[-2:])


def served_default_size(sampling) -> tuple[int, int]:
    """The method's default canvas, raised to the service's smallest side (the watermark needs it)."""
    caps = sampling.service
    if caps.min_side < watermark.MIN_SIDE:
        from facegen.core.errors import ConfigError

        raise ConfigError(f"sampling.service.min_side must be at least {watermark.MIN_SIDE}: the invisible watermark "
                          f"on every served image needs it")
    return max(sampling.width, caps.min_side), max(sampling.height, caps.min_side)


def encoder_id(preset: str, method: str, model: str | None) -> str:
    return f"{preset}:{method}:{model or 'fresh'}"


# Every deployment queues a bounded number of requests (more: 503 overloaded), so a burst costs memory once, not per
# waiting request without end.
@serve.deployment(name="FaceEncoder", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8,
                  max_queued_requests=64)
class FaceEncoder:
    """Photos → a served method's identity token, and the detected faces (bbox, score). Loads each method's face
    encoder alone (the face stack + M² / the FaceCLIP face ViT) — never a diffusion model or text tower — on the
    replica's GPU when it has one."""

    def __init__(self, preset: str, models: dict, keys: list[bytes], token_ttl_s: float):
        quiet_libraries()
        self.preset, self.models, self.keys, self.token_ttl_s = preset, models, keys, token_ttl_s
        self.encoders = {}
        for name, model in models.items():
            enc = get_method(name).load_face_encoder(preset, model)
            if self.encoders:  # one face stack serves every method
                enc.face_analyzer = next(iter(self.encoders.values())).face_analyzer
            self.encoders[name] = enc

    def encode(self, method: str, images: list[bytes]) -> dict:
        start = time.perf_counter()
        enc = self.encoders[method]
        names = ["face_image"] if len(images) == 1 else [f"face_images[{i}]" for i in range(len(images))]
        from facegen.core.face.align import align_face

        # One photo at a time, each reduced to its aligned face crop right after detection: a request holds one
        # decoded photo at most, whatever its photos' sizes (8 photos of 40 MP: measured in test_serve.py).
        found, crops, embeddings = [], [], []
        for img, name in zip(images, names):
            rgb, face = enc.face_analyzer.largest(img, name)
            found.append(face)  # its box in the photo's coordinates, for the answer
            crops.append(align_face(rgb, face.kps, enc.crop_size))
            embeddings.append(face.embedding)
            del rgb
        identity = enc.from_crops(np.stack(crops), np.stack(embeddings))
        token = tokens.seal(self.keys, method, encoder_id(self.preset, method, self.models[method]), identity.to_arrays(),
                            self.token_ttl_s)
        return {"identity_token": token, "faces": [face.to_json() for face in found],
                "pose": pose_of(found[0]), "ms": round((time.perf_counter() - start) * 1000, 1)}

    def pose(self, method: str, image: bytes) -> dict:
        """The largest face of a pose photo: its keypoints and box (for a head box's keypoint map)."""
        return pose_of(self.encoders[method].face_analyzer.largest(image, "control.pose_image")[1])


def pose_of(face) -> dict:
    return {"kps": np.asarray(face.kps, float).tolist(), "bbox": np.asarray(face.bbox, float).tolist()}


class Generator:
    """One method's generator: verifies tokens, groups compatible requests into one pipeline call, watermarks."""

    max_images = 8

    def __init__(self, method: str, preset: str, model: str | None, keys: list[bytes]):
        quiet_libraries()
        from facegen.core.config import load_preset

        self.method, self.preset, self.model, self.keys = get_method(method), preset, model, keys
        loaded = load_preset(preset)
        self.preset_name, self.section = loaded.name, loaded.method(method)
        self.identity_cls = self.method.identity_class()
        self.pipe = self.method.load_pipeline(preset, model)
        self.pipe.set_progress_bar_config(disable=True)
        if self.section.controlnet.model:  # at start: a ControlNet that cannot load fails the replica, not a request
            self.pipe.load_controlnet()
        self.default_size = served_default_size(self.section.sampling)
        self.requests_drawn, self.max_batch_size = 0, 0  # counters, not a list that grows with every request

    def model_ids(self) -> dict:
        """What this replica loaded, by name (no server paths)."""
        return {"method": self.method.name, "preset": self.preset_name,
                "base_model": public_name(self.section.base_model), "encoder": public_name(self.model),
                "device": str(self.pipe.device), "torch_dtype": str(self.pipe.denoising_model.dtype).removeprefix("torch."),
                "default_size": list(self.default_size), "steps": self.pipe.config.num_inference_steps,
                "guidance_scale": self.pipe.config.guidance_scale}

    def job(self, req: DrawRequest) -> GenerationJob:
        """The request as the ingress resolved it, its token opened: nothing is resolved again here."""
        eid = encoder_id(self.preset, self.method.name, self.model)
        arrays = tokens.open_token(self.keys, req.identity_token, self.method.name, eid)
        self.pipe.check_prompt_tokens([req.prompt])  # alone, before it shares a batch with others
        return GenerationJob(prompt=req.prompt, identity=arrays, seed=req.seed, plan=req.plan)

    def reconfigure(self, user_config: dict) -> None:
        """`user_config` (serve/config.yaml, or `serve deploy` again: no redeploy): the batch size and wait."""
        cfg = BatchingConfig(**(user_config or {}))
        self.generate.set_max_batch_size(cfg.max_batch_size)
        self.generate.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    @serve.batch(max_batch_size=BatchingConfig.max_batch_size, batch_wait_timeout_s=BatchingConfig.batch_wait_timeout_s)
    async def generate(self, requests: list[DrawRequest]) -> list:
        """Draw only: images leave as uint8 arrays; the ingress watermarks and encodes them (off this replica)."""
        results: list = [None] * len(requests)
        jobs = []
        for i, req in enumerate(requests):
            try:
                jobs.append((i, self.job(req)))
            except FacegenError as e:  # one bad token must not fail the others in its batch
                results[i] = e
        start = time.perf_counter()
        # In a worker thread: the replica's event loop keeps accepting requests and forming the next batch meanwhile.
        drawn = await asyncio.to_thread(draw_groups, [j for _, j in jobs], self.max_images, self._draw)
        seconds = time.perf_counter() - start
        info = {"method": self.method.name, **self.model_ids()}
        for (i, job), out in zip(jobs, drawn):
            if isinstance(out, Exception):
                results[i] = out
                continue
            images, batch_size = out
            self.requests_drawn += 1
            self.max_batch_size = max(self.max_batch_size, batch_size)
            results[i] = {"arrays": [np.asarray(img, dtype=np.uint8) for img in images], "seed": job.seed,
                          "info": {**info, "prompt": job.prompt}, "batch_size": batch_size,
                          "ms": round(seconds * 1000, 1)}
        return results

    def _draw(self, jobs: list[GenerationJob]) -> list:
        """One pipeline call for a compatible group (one plan but for the control images): every image its own
        prompt, identity, seeded generator and control image."""
        import dataclasses

        import torch  # here, not at the top: the ingress replicas import this module and never need torch

        prompts, identities, gens, controls = [], [], [], []
        for job in jobs:
            identity = self.identity_cls.from_arrays(job.identity)
            for n in range(job.num_images):
                prompts.append(job.prompt)
                identities.append(identity)
                gens.append(torch.Generator().manual_seed(job.seed + n))
                if job.plan.control is not None:
                    controls += job.plan.control.image
        plan = jobs[0].plan
        control = None if plan.control is None else dataclasses.replace(plan.control, image=controls)
        plan = dataclasses.replace(plan, num_images=1, control=control)
        return self.pipe(prompt=prompts, identity=identities, plan=plan, generator=gens).images

    def stats(self) -> dict:
        return {"requests_drawn": self.requests_drawn, "max_batch_size": self.max_batch_size}


def generator_deployment(method: str):
    """The deployment of one method's generator, named <Title>Generator (serve/config.yaml names it so)."""
    return serve.deployment(Generator, name=f"{get_method(method).title}Generator",
                            ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8, max_queued_requests=64,
                            user_config=asdict(BatchingConfig()))
