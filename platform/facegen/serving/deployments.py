"""Ray Serve deployments: one ingress (FastAPI), one face encoder, one generator per method, composed with
DeploymentHandles. Replicas are stateless: identities travel as signed tokens (tokens.py).

    HTTP → Ingress ──encode──▶ FaceEncoder (detect + align + identity + M² / FaceCLIP face tokens)
                   └─generate─▶ DreamIdentityGenerator | FaceCLIPGenerator (@serve.batch)
"""

import base64
import io
import logging
import time
from importlib import resources

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from ray import serve

from facegen.errors import FacegenError
from facegen.serving import tokens, watermark
from facegen.serving.api import (
    METHODS,
    ApiError,
    EncodeRequest,
    GenerateRequest,
    api_keys,
    check_auth,
    decode_base64_image,
    install_error_handlers,
    read_body,
)
from facegen.serving.batching import GenerationJob, group_compatible

log = logging.getLogger("facegen.serve")


def _quiet() -> None:
    from facegen.data.stages import quiet_worker

    quiet_worker()


def encoder_id(preset: str, method: str, model: str | None) -> str:
    return f"{preset}:{method}:{model or 'preset'}"


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@serve.deployment(name="FaceEncoder", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class FaceEncoder:
    """Photo → identity tensors per method, and the detected face (bbox, score)."""

    def __init__(self, preset: str, models: dict, key: bytes):
        from facegen.config import load_preset
        from facegen.face.analyzer import FaceAnalyzer
        from facegen.models.m2 import M2Encoder

        _quiet()
        self.preset, self.models, self.key = preset, models, key
        p = load_preset(preset)
        self.analyzer = FaceAnalyzer(p.face)
        self.m2 = M2Encoder.from_pretrained(models["m2"]) if models.get("m2") else M2Encoder.from_config_random(p.m2)
        self.faceclip = self._faceclip(p, models.get("faceclip"))

    @staticmethod
    def _faceclip(p, weights):
        from facegen.models.faceclip import FaceCLIPEncoder
        from facegen.weights import load_sdxl_components

        if weights:
            return FaceCLIPEncoder.from_pretrained(weights)
        c = load_sdxl_components(p.sdxl, p.sha256)
        return FaceCLIPEncoder.from_sdxl(p.faceclip_encoder, c["text_encoder"], c["text_encoder_2"], c["tokenizer"],
                                         c["tokenizer_2"])

    def encode(self, method: str, image: bytes) -> dict:
        from facegen.face.align import align_face
        from facegen.models.face_vit import faces_to_tensor

        start = time.perf_counter()
        rgb, face = self.analyzer.largest(image, "face_image")
        aligned = align_face(rgb, face.kps, 112)
        with torch.no_grad():
            if method == "dreamidentity":
                arrays = {"tokens": self.m2.encode_aligned(aligned)[0].float().numpy()}
            else:
                tokens_ = self.faceclip.encode_faces(faces_to_tensor(aligned[None]))[0]
                arrays = {"embedding": face.embedding.astype(np.float32), "face_tokens": tokens_.float().numpy()}
        token = tokens.sign(self.key, method, encoder_id(self.preset, method, self.models.get(_model_key(method))), arrays)
        return {"identity": token, "face": face.to_json(), "ms": round((time.perf_counter() - start) * 1000, 1)}


def _model_key(method: str) -> str:
    return "m2" if method == "dreamidentity" else "faceclip"


class _Generator:
    """Shared by both generator deployments: unpack tokens, group compatible requests, watermark the PNGs."""

    method = ""
    max_images = 8

    def __init__(self, preset: str, models: dict, key: bytes):
        _quiet()
        self.preset, self.models, self.key = preset, models, key
        from facegen.pipelines import load_pipeline

        self.pipe = load_pipeline(self.method, preset, models.get(_model_key(self.method))).to(_device())
        self.pipe.set_progress_bar_config(disable=True)
        cfg = self.pipe.config
        # The invisible watermark needs ≥256 px a side, so the service never draws smaller images.
        self.default_size = (max(cfg.width, watermark.MIN_SIDE), max(cfg.height, watermark.MIN_SIDE))
        self.batch_sizes: list[int] = []

    def model_ids(self) -> dict:
        return {"preset": self.preset, "encoder": self.models.get(_model_key(self.method)) or "preset",
                "default_size": list(self.default_size), "steps": self.pipe.config.num_inference_steps,
                "guidance_scale": self.pipe.config.guidance_scale}

    def job(self, req: dict) -> GenerationJob:
        eid = encoder_id(self.preset, self.method, self.models.get(_model_key(self.method)))
        arrays = tokens.verify(self.key, req["identity"], self.method, eid)
        cfg = self.pipe.config
        return GenerationJob(prompt=req["prompt"], identity=arrays, seed=req["seed"], num_images=req["num_images"],
                             steps=req.get("steps") or cfg.num_inference_steps,
                             guidance_scale=cfg.guidance_scale if req.get("guidance_scale") is None else req["guidance_scale"],
                             width=req.get("width") or self.default_size[0], height=req.get("height") or self.default_size[1],
                             negative_prompt=cfg.negative_prompt if req.get("negative_prompt") is None else req["negative_prompt"])

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.1)
    async def generate(self, requests: list[dict]) -> list:
        results: list = [None] * len(requests)
        jobs = []
        for i, req in enumerate(requests):
            try:
                jobs.append((i, self.job(req)))
            except FacegenError as e:  # one bad token must not fail the others in its batch
                results[i] = e
        valid = [j for _, j in jobs]
        for group in group_compatible(valid, self.max_images):
            members = [jobs[g] for g in group]
            start = time.perf_counter()
            try:
                images = self._draw([j for _, j in members])
            except FacegenError as e:
                for i, _ in members:
                    results[i] = e
                continue
            ms = round((time.perf_counter() - start) * 1000, 1)
            self.batch_sizes.append(len(members))
            for i, job in members:
                pngs = [watermark.png_with_provenance(img, {"method": self.method, "seed": job.seed + n, "prompt": job.prompt,
                                                            **self.model_ids()})
                        for n, img in enumerate(images[:job.num_images])]
                images = images[job.num_images:]
                results[i] = {"images": [base64.b64encode(p).decode() for p in pngs], "seed": job.seed,
                              "batch_size": len(members), "ms": ms}
        return results

    def _draw(self, jobs: list[GenerationJob]) -> list:
        """One pipeline call for a compatible group: every image its own prompt, identity and seeded generator."""
        prompts, owners, gens = _generators(jobs)
        j = jobs[0]
        return self.pipe(prompt=prompts, identity=self._identities([jobs[o].identity for o in owners]),
                         negative_prompt=j.negative_prompt, num_inference_steps=j.steps, guidance_scale=j.guidance_scale,
                         width=j.width, height=j.height, generator=gens).images

    @staticmethod
    def _identities(arrays: list[dict]):
        """The method's identity argument for the pipeline, one entry per image."""
        raise NotImplementedError

    def stats(self) -> dict:
        return {"batches": len(self.batch_sizes), "max_batch_size": max(self.batch_sizes, default=0)}


def _generators(jobs: list[GenerationJob]) -> tuple[list[str], list[int], list[torch.Generator]]:
    prompts, owners, gens = [], [], []
    for k, job in enumerate(jobs):
        for n in range(job.num_images):
            prompts.append(job.prompt)
            owners.append(k)
            gens.append(torch.Generator().manual_seed(job.seed + n))
    return prompts, owners, gens


@serve.deployment(name="DreamIdentityGenerator", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class DreamIdentityGenerator(_Generator):
    method = "dreamidentity"

    @staticmethod
    def _identities(arrays: list[dict]):
        return torch.stack([torch.from_numpy(a["tokens"]) for a in arrays])


@serve.deployment(name="FaceCLIPGenerator", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class FaceCLIPGenerator(_Generator):
    method = "faceclip"

    @staticmethod
    def _identities(arrays: list[dict]):
        from facegen.pipelines.faceclip_sdxl import FaceCLIPIdentity

        return [FaceCLIPIdentity(torch.from_numpy(a["embedding"]), torch.from_numpy(a["face_tokens"])) for a in arrays]


app = FastAPI(title="facegen", version="1", description="Identity-preserving portrait generation (DreamIdentity, FaceCLIP).")
install_error_handlers(app)


def _body_schema(model) -> dict:
    # The handlers read the raw body (size cap before parsing); the schema is still published for clients.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _unwrap(exc: Exception) -> Exception:
    return getattr(exc, "cause", None) or exc  # Ray wraps a replica's exception; keep the user's message


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.25})
@serve.ingress(app)
class Ingress:
    def __init__(self, encoder, generators: dict, preset: str, max_body: int = 10 * 1024 * 1024, cors: list | None = None,
                 keys: list[str] | None = None):
        self.encoder, self.generators, self.preset, self.max_body = encoder, generators, preset, max_body
        self.keys = list(keys) if keys is not None else api_keys()
        if not self.keys:
            log.warning("facegen: no FACEGEN_API_KEYS set — the API is open to anyone who can reach it")
        if cors:
            from fastapi.middleware.cors import CORSMiddleware

            app.add_middleware(CORSMiddleware, allow_origins=cors, allow_methods=["GET", "POST"], allow_headers=["*"])

    async def _call(self, method, *args):
        from ray.serve.exceptions import BackPressureError

        try:
            return await method.remote(*args)
        except BackPressureError:
            raise ApiError(503, "overloaded", "the service is at capacity: retry in a moment") from None
        except FacegenError as e:
            raise _unwrap(e) from None

    async def _identity(self, req) -> tuple[str, dict | None]:
        if req.identity is not None:
            return req.identity, None
        out = await self._call(self.encoder.encode, req.method, decode_base64_image(req.face_image))
        return out["identity"], out

    @app.post("/v1/encode", openapi_extra=_body_schema(EncodeRequest))
    async def encode(self, request: Request):
        check_auth(request, self.keys)
        req = await read_body(request, EncodeRequest, self.max_body)
        token, out = await self._identity(req)
        if out is None:
            raise ApiError(422, "validation", "/v1/encode needs face_image")
        return {"identity": token, "face": out["face"]}

    @app.post("/v1/generate", openapi_extra=_body_schema(GenerateRequest))
    async def generate(self, request: Request):
        check_auth(request, self.keys)
        start = time.perf_counter()
        req = await read_body(request, GenerateRequest, self.max_body)
        if req.method == "dreamidentity" and "S*" not in req.prompt:
            raise ApiError(400, "bad_prompt", 'a dreamidentity prompt needs "S*" where the person goes, e.g. "S* as a chef"')
        token, encoded = await self._identity(req)
        seed = req.seed if req.seed is not None else int.from_bytes(np.random.bytes(4), "little") & 0x7FFFFFFF
        payload = req.model_dump(exclude={"face_image"}) | {"identity": token, "seed": seed}
        out = await self._call(self.generators[req.method].generate, payload)
        if isinstance(out, Exception):
            raise _unwrap(out)
        timings = {"total": round((time.perf_counter() - start) * 1000, 1), "generate": out["ms"]}
        if encoded:
            timings["encode"] = encoded["ms"]
        return {"images": out["images"], "seed": out["seed"], "method": req.method, "batch_size": out["batch_size"],
                "timings_ms": timings}

    @app.get("/healthz")
    async def healthz(self):
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self):
        from facegen.config import PRESETS

        info = {m: await self._call(self.generators[m].model_ids) for m in METHODS}
        return {"methods": list(METHODS), "preset": self.preset, "presets": list(PRESETS), "models": info,
                "max_body_bytes": self.max_body, "num_images": [1, 4]}

    @app.get("/v1/stats")
    async def stats(self):
        return {m: await self._call(self.generators[m].stats) for m in METHODS}

    @app.get("/", response_class=HTMLResponse)
    async def page(self):
        return resources.files("facegen.serving").joinpath("index.html").read_text()


def build_app(preset: str = "tiny", m2: str | None = None, faceclip: str | None = None, max_body: int | None = None,
              options: dict | None = None, cors: list | None = None, keys: list[str] | None = None):
    """The application graph; `options` maps a deployment name to `.options(...)` (replicas, autoscaling, GPUs).
    The preset and model directories are checked here, so a mistake fails `serve run` at once with its reason
    rather than in every replica."""
    from pathlib import Path

    from facegen.config import load_preset
    from facegen.errors import ConfigError

    load_preset(preset)
    for name, directory in (("m2", m2), ("faceclip", faceclip)):
        if directory and not (Path(directory) / "config.json").is_file():
            raise ConfigError(f"{name}={directory}: not an exported model (no config.json; use <train output>/model)")
    key = tokens.token_key()
    models = {"m2": m2, "faceclip": faceclip}
    options = options or {}

    def bind(deployment, *args):
        return deployment.options(**options.get(deployment.name, {})).bind(*args)

    encoder = bind(FaceEncoder, preset, models, key)
    generators = {"dreamidentity": bind(DreamIdentityGenerator, preset, models, key),
                  "faceclip": bind(FaceCLIPGenerator, preset, models, key)}
    return Ingress.options(**options.get("Ingress", {})).bind(encoder, generators, preset,
                                                               max_body or 10 * 1024 * 1024, cors, keys)


def image_from_response(b64: str):
    import PIL.Image

    return PIL.Image.open(io.BytesIO(base64.b64decode(b64)))
