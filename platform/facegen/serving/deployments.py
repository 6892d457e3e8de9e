"""Ray Serve deployments, composed from the method registry: one ingress (FastAPI), one face encoder for every
served method, one generator per served method, wired with DeploymentHandles. Replicas are stateless: identities
travel as encrypted, authenticated identity tokens (tokens.py).

    HTTP → Ingress ──encode──▶ FaceEncoder (detect + align + the method's face encoder → identity token)
                   └─generate─▶ <Method>Generator, one per served method (@serve.batch, draws only)
                   ◀─ uint8 arrays; the ingress watermarks and encodes them (png | jpeg | webp) in its own threads,
                      so the GPU replica goes straight on to its next batch.
"""

import asyncio
import base64
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
import PIL.Image
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from ray import serve

from facegen.control import check_control_params, check_head_box, fit_control_image, head_control_image
from facegen.errors import FacegenError
from facegen.face.images import load_image
from facegen.methods import REGISTRY, get_method
from facegen.methods.base import request_work, work_budget
from facegen.serving import tokens, watermark
from facegen.serving.api import (
    ApiError,
    EncodeRequest,
    GenerateRequest,
    api_keys,
    check_auth,
    decode_base64_image,
    error_body,
    install_error_handlers,
    read_body,
)
from facegen.serving.batching import BatchingConfig, GenerationJob, draw_groups
from facegen.workers import quiet_libraries

log = logging.getLogger("facegen.serve")


def public_name(ref: str | None) -> str:
    """A model reference as clients see it: hub ids and built-in models as they are, a server path by its last two
    parts (never the whole path)."""
    if not ref:
        return "fresh"
    if ":" in ref or (ref.count("/") == 1 and not Path(ref).expanduser().exists()):
        return ref
    return "/".join(Path(ref).parts[-2:])


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
            enc = get_method(name).pipeline_class().load_face_encoder(preset, model)
            if self.encoders:  # one face stack serves every method
                enc.face_analyzer = next(iter(self.encoders.values())).face_analyzer
            self.encoders[name] = enc

    def encode(self, method: str, images: list[bytes]) -> dict:
        start = time.perf_counter()
        enc = self.encoders[method]
        names = ["face_image"] if len(images) == 1 else [f"face_images[{i}]" for i in range(len(images))]
        from facegen.face.analyzer import crop_to_face

        # One photo at a time, each cut down to its face at once: eight 40 MP photos are never in memory together.
        found, detections = [], []
        for img, name in zip(images, names):
            rgb, face = enc.face_analyzer.largest(img, name)
            found.append(face)  # its box in the photo's coordinates, for the answer
            detections.append(crop_to_face(rgb, face))
            del rgb
        identity = enc.from_detections(detections)
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
        from facegen.config import load_preset
        from facegen.methods import load_pipeline

        self.method, self.preset, self.model, self.keys = get_method(method), preset, model, keys
        loaded = load_preset(preset)
        self.preset_name, self.section = loaded.name, loaded.method(method)
        self.identity_cls = self.method.identity_class()
        self.pipe = load_pipeline(method, preset, model)
        self.pipe.set_progress_bar_config(disable=True)
        if self.section.controlnet.model:  # at start: a ControlNet that cannot load fails the replica, not a request
            self.pipe.load_controlnet()
        self.default_size = served_default_size(self.section.sampling)
        self.batches, self.max_batch_size = 0, 0  # counters, not a list that grows with every request

    def model_ids(self) -> dict:
        """What this replica loaded, by name (no server paths)."""
        return {"method": self.method.name, "preset": self.preset_name,
                "base_model": public_name(self.section.base_model), "encoder": public_name(self.model),
                "device": str(self.pipe.device), "torch_dtype": str(self.pipe.unet.dtype).removeprefix("torch."),
                "default_size": list(self.default_size), "steps": self.pipe.config.num_inference_steps,
                "guidance_scale": self.pipe.config.guidance_scale}

    def job(self, req: dict) -> GenerationJob:
        eid = encoder_id(self.preset, self.method.name, self.model)
        arrays = tokens.open_token(self.keys, req["identity_token"], self.method.name, eid)
        self.pipe.check_prompt_tokens([req["prompt"]])  # alone, before it shares a batch with others
        s = self.pipe.sampling.resolve(req.get("steps"), req.get("guidance_scale"), req.get("width") or self.default_size[0],
                                       req.get("height") or self.default_size[1], req.get("negative_prompt"))
        return GenerationJob(prompt=req["prompt"], identity=arrays, seed=req["seed"], num_images=req["num_images"],
                             steps=s.steps, guidance_scale=s.guidance_scale, width=s.width, height=s.height,
                             negative_prompt=s.negative_prompt, **(req.get("control") or {}))

    def reconfigure(self, user_config: dict) -> None:
        """`user_config` (serve/config.yaml, or `serve deploy` again: no redeploy): the batch size and wait."""
        cfg = BatchingConfig(**(user_config or {}))
        self.generate.set_max_batch_size(cfg.max_batch_size)
        self.generate.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    @serve.batch(max_batch_size=BatchingConfig.max_batch_size, batch_wait_timeout_s=BatchingConfig.batch_wait_timeout_s)
    async def generate(self, requests: list[dict]) -> list:
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
            self.batches += 1
            self.max_batch_size = max(self.max_batch_size, batch_size)
            results[i] = {"arrays": [np.asarray(img, dtype=np.uint8) for img in images], "seed": job.seed,
                          "info": {**info, "prompt": job.prompt}, "batch_size": batch_size,
                          "ms": round(seconds * 1000, 1)}
        return results

    def _draw(self, jobs: list[GenerationJob]) -> list:
        """One pipeline call for a compatible group: every image its own prompt, identity and seeded generator."""
        import torch  # here, not at the top: the ingress replicas import this module and never need torch

        prompts, identities, gens, controls = [], [], [], []
        for job in jobs:
            identity = self.identity_cls.from_arrays(job.identity)
            for n in range(job.num_images):
                prompts.append(job.prompt)
                identities.append(identity)
                gens.append(torch.Generator().manual_seed(job.seed + n))
                if job.control is not None:
                    controls.append(PIL.Image.fromarray(job.control))
        j = jobs[0]
        control = {} if j.control is None else {"control_image": controls, "control_scale": j.control_scale,
                                                "control_start": j.control_start, "control_end": j.control_end}
        return self.pipe(prompt=prompts, identity=identities, negative_prompt=j.negative_prompt,
                         num_inference_steps=j.steps, guidance_scale=j.guidance_scale, width=j.width, height=j.height,
                         generator=gens, **control).images

    def stats(self) -> dict:
        return {"batches": self.batches, "max_batch_size": self.max_batch_size}


def generator_deployment(method: str):
    """The deployment of one method's generator, named <Title>Generator (serve/config.yaml names it so)."""
    return serve.deployment(Generator, name=f"{get_method(method).title}Generator",
                            ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8, max_queued_requests=64,
                            user_config=asdict(BatchingConfig()))


app = FastAPI(title="facegen", version="2", description="Identity-preserving portrait generation (DreamIdentity, FaceCLIP).")
install_error_handlers(app)


def _body_schema(model) -> dict:
    # The handlers read the raw body (size cap before parsing); the schema is still published for clients.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


class KeyMiddleware:
    """With API keys set, refuse every request but `/healthz` and the page `/` that lacks one (401, the error body)."""

    OPEN = ("/healthz", "/")

    def __init__(self, asgi_app, keys: list[str]):
        self.app, self.keys = asgi_app, keys

    async def __call__(self, scope, receive, send):
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # an app served under a route prefix sees it in the path
            path = path[len(root):] or "/"
        if scope["type"] == "http" and path not in self.OPEN:
            from fastapi.responses import JSONResponse
            from starlette.requests import Request as StarletteRequest

            try:
                check_auth(StarletteRequest(scope), self.keys)
            except ApiError as e:
                await JSONResponse(error_body(e.code, e.message), status_code=e.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _control_image(data: str, width: int, height: int):
    """A client's control image (base64) → (the image at the canvas size, a note if it was resized)."""
    return fit_control_image(PIL.Image.fromarray(load_image(decode_base64_image(data, "control.control_image"))),
                             width, height)


def _unwrap(exc: Exception) -> Exception:
    return getattr(exc, "cause", None) or exc  # Ray wraps a replica's exception; keep the user's message


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=100, max_queued_requests=200)
@serve.ingress(app)
class Ingress:
    def __init__(self, encoder, generators: dict, preset: str, max_body: int, model_info: dict,
                 cors: list | None = None, keys: list[str] | None = None):
        self.encoder, self.generators, self.preset, self.max_body = encoder, generators, preset, max_body
        self.methods, self.model_info = list(generators), model_info
        self.image_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="image-encode")  # numpy/Pillow release the GIL
        self.keys = list(keys) if keys is not None else api_keys()
        if not self.keys:
            log.warning("facegen: no FACEGEN_API_KEYS set — the API is open to anyone who can reach it")
        else:  # every route but the health check and the page needs a key (the schema and docs included)
            app.add_middleware(KeyMiddleware, keys=self.keys)
        if cors:
            from fastapi.middleware.cors import CORSMiddleware

            app.add_middleware(CORSMiddleware, allow_origins=cors, allow_methods=["GET", "POST"], allow_headers=["*"])

    # A replica that dies mid-request (a crashed node, a killed process) takes its in-flight requests with it. Encoding
    # and drawing are deterministic for a given request (seeded), so the ingress sends such a request again — Serve
    # routes it to a live replica, or queues it until the controller has replaced the dead one.
    replica_retries = 2

    async def _call(self, method, *args):
        from ray.exceptions import ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError

        for attempt in range(self.replica_retries + 1):
            try:
                return await method.remote(*args)
            except BackPressureError:
                raise ApiError(503, "overloaded", "the service is at capacity: retry in a moment") from None
            except FacegenError as e:
                raise _unwrap(e) from None
            except (RayActorError, ActorUnavailableError) as e:
                log.warning("a replica was lost during a request (%s): attempt %d of %d", type(e).__name__,
                            attempt + 1, self.replica_retries + 1)
        raise ApiError(503, "unavailable", "the replicas serving this request were lost: retry in a moment")

    def _served(self, method: str):
        if method not in self.generators:
            raise ApiError(422, "validation", f"method '{method}' is not served here (served: {', '.join(self.methods)})")
        return get_method(method)

    def _check_work(self, req) -> None:
        """The service's own caps on one request (methods.<m>.sampling.service, beyond what any caller may ask),
        and its work: width × height × steps × images within the method's budget (no GPU held for minutes)."""
        info = self.model_info[req.method]
        caps = info["service_caps"]
        for name, value, low, high in (("steps", req.steps, 1, caps["max_steps"]),
                                       ("num_images", req.num_images, 1, caps["max_images"]),
                                       ("width", req.width, caps["min_side"], caps["max_side"]),
                                       ("height", req.height, caps["min_side"], caps["max_side"])):
            if value is not None and not low <= value <= high:
                raise ApiError(422, "validation", f"{name} {value}: this service allows {low}..{high} for {req.method} "
                                                  f"(methods.{req.method}.sampling.service)")
        width, height = req.width or info["default_size"][0], req.height or info["default_size"][1]
        work = request_work(width, height, req.steps or info["steps"], req.num_images, info["native_pixels"],
                            req.control is not None)
        if work > info["max_megapixel_steps"]:
            raise ApiError(422, "validation",
                           f"this request asks for {work:.0f} megapixel-steps (width × height × steps × num_images, more for canvases "
                           f"over {info['native_pixels'] / 1e6:.2g} MP and with control); "
                           f"{req.method} allows at most {info['max_megapixel_steps']:g} here: ask for fewer or "
                           f"smaller images or fewer steps")

    async def _encode(self, req) -> dict:
        photos = req.photos()
        names = ["face_image"] if req.face_image is not None else [f"face_images[{i}]" for i in range(len(photos))]
        images = [decode_base64_image(p, n) for p, n in zip(photos, names)]
        return await self._call(self.encoder.encode, req.method, images)

    @app.post("/v1/encode", openapi_extra=_body_schema(EncodeRequest))
    async def encode(self, request: Request):
        check_auth(request, self.keys)
        req = await read_body(request, EncodeRequest, self.max_body)
        self._served(req.method)
        if req.identity_token is not None:
            raise ApiError(422, "validation", "/v1/encode needs face_image or face_images")
        out = await self._encode(req)
        return {"identity_token": out["identity_token"], "faces": out["faces"]}

    @app.post("/v1/generate", openapi_extra=_body_schema(GenerateRequest))
    async def generate(self, request: Request):
        check_auth(request, self.keys)
        start = time.perf_counter()
        req = await read_body(request, GenerateRequest, self.max_body)
        method = self._served(req.method)
        # The pipeline's own input checks (S* rule, sizes), without torch, before any replica works on the request.
        method.check_inputs(req.prompt, req.negative_prompt or "", req.height, req.width)
        self._check_work(req)
        info = self.model_info[req.method]
        width, height = req.width or info["default_size"][0], req.height or info["default_size"][1]
        if req.control is not None:
            if not info["control"]["model"]:
                raise ApiError(422, "validation", f"{req.method} has no ControlNet configured here: control is not "
                                                  f"available (methods.{req.method}.controlnet.model)")
            if req.control.head_box is not None:
                check_head_box(req.control.head_box, width, height)
            if req.control.control_image is not None:
                # Decoding user bytes is CPU work of unbounded cost: on the thread pool, never in this event loop
                # (which answers /healthz and every other request), and shrunk to the canvas at once.
                control_image, note = await asyncio.get_running_loop().run_in_executor(
                    self.image_pool, _control_image, req.control.control_image, width, height)
        encoded = await self._encode(req) if req.identity_token is None else None
        token = encoded["identity_token"] if encoded else req.identity_token
        seed = req.seed if req.seed is not None else int.from_bytes(np.random.bytes(4), "little") & 0x7FFFFFFF
        payload = req.model_dump(exclude={"face_image", "face_images", "control"}) | {"identity_token": token, "seed": seed}
        notes = []
        if req.control is not None:
            c = req.control
            if c.head_box is not None:  # posed as the pose photo's face, else the face photo's, else frontal
                pose = (await self._call(self.encoder.pose, req.method, decode_base64_image(c.pose_image, "control.pose_image"))
                        if c.pose_image is not None else encoded["pose"] if encoded else None)
                face = (np.array(pose["kps"]), np.array(pose["bbox"])) if pose else None
                image = head_control_image(width, height, c.head_box, face, info["control"]["render"])
            else:
                image = control_image
                notes += [note] if note else []
            d = info["control"]
            scale, start, end = (d[k] if getattr(c, k) is None else getattr(c, k) for k in ("scale", "start", "end"))
            check_control_params(scale, start, end)
            payload["control"] = {"control": np.asarray(image, np.uint8), "control_scale": scale,
                                  "control_start": start, "control_end": end}
        out = await self._call(self.generators[req.method].generate, payload)
        if isinstance(out, Exception):
            raise _unwrap(out)
        images, encode_ms = await self._encode_images(out, req.format, req.quality)
        timings = {"total": round((time.perf_counter() - start) * 1000, 1), "generate": out["ms"], "image_encode": encode_ms}
        if encoded:
            timings["encode"] = encoded["ms"]
        body = {"images": images, "format": req.format, "seed": out["seed"], "method": req.method,
                "batch_size": out["batch_size"], "timings_ms": timings}
        return body | ({"notes": notes} if notes else {})

    async def _encode_images(self, out: dict, fmt: str, quality: int) -> tuple[list[str], float]:
        """Watermark + encode on this (CPU) replica's thread pool, one image per thread: off the GPU's critical path."""
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        encoded = await asyncio.gather(*(
            loop.run_in_executor(self.image_pool, watermark.encode_with_provenance, array,
                                 {**out["info"], "seed": out["seed"] + n}, fmt, quality)
            for n, array in enumerate(out["arrays"])))
        return [base64.b64encode(b).decode() for b in encoded], round((time.perf_counter() - start) * 1000, 1)

    @app.get("/healthz")
    async def healthz(self):
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self):
        # From the ingress's own state (what the builder gave every replica): no call reaches a GPU replica.
        return {"methods": self.methods, "preset": self.preset, "models": self.model_info, "max_body_bytes": self.max_body,
                "num_images": [1, 4]}

    @app.get("/v1/stats")
    async def stats(self):
        return {m: await self._call(self.generators[m].stats) for m in self.methods}

    @app.get("/", response_class=HTMLResponse)
    async def page(self):
        options = "\n".join(
            f'      <option value="{m}" data-placeholder="{"yes" if REGISTRY[m].needs_placeholder else "no"}" '
            f'data-width="{self.model_info[m]["default_size"][0]}" data-height="{self.model_info[m]["default_size"][1]}">'
            f'{REGISTRY[m].title}{" (write S* where the person goes)" if REGISTRY[m].needs_placeholder else ""}</option>'
            for m in self.methods)
        html = resources.files("facegen.serving").joinpath("index.html").read_text()
        return html.replace("<!--METHOD_OPTIONS-->", options)


def build_app(args) -> object:
    """The application graph for checked builder arguments (serve/app.py's AppArgs): a generator for each served
    method, one face encoder for them all, the ingress. `args.options` maps a deployment name to `.options(...)`
    (replicas, autoscaling, GPUs)."""
    keys = tokens.token_keys()
    models = {m: getattr(args, m) for m in args.methods}

    def bind(deployment, *bind_args):
        return deployment.options(**args.options.get(deployment.name, {})).bind(*bind_args)

    encoder = bind(FaceEncoder, args.preset, models, keys, args.token_ttl_s)
    generators = {m: bind(generator_deployment(m), m, args.preset, models[m], keys) for m in args.methods}
    info = model_info(args.preset, models)
    preset_name = next(iter(info.values()))["preset"]  # the preset's name, never a server path to its file
    return Ingress.options(**args.options.get("Ingress", {})).bind(encoder, generators, preset_name, args.max_body,
                                                                    info, args.cors, args.keys)


def served_default_size(sampling) -> tuple[int, int]:
    """The method's default canvas, raised to the service's smallest side (the watermark needs it)."""
    caps = sampling.service
    if caps.min_side < watermark.MIN_SIDE:
        from facegen.errors import ConfigError

        raise ConfigError(f"sampling.service.min_side must be at least {watermark.MIN_SIDE}: the invisible watermark "
                          f"on every served image needs it")
    return max(sampling.width, caps.min_side), max(sampling.height, caps.min_side)


def model_info(preset: str, models: dict) -> dict:
    """Per served method, what its replicas load, by name (no server paths): `GET /v1/models`."""
    from facegen.config import load_preset

    p = load_preset(preset)
    info = {}
    for method, model in models.items():
        section = p.method(method)
        s = section.sampling
        info[method] = {"method": method, "preset": p.name, "base_model": public_name(section.base_model),
                        "encoder": public_name(model), "dtype": section.dtype,
                        "default_size": list(served_default_size(s)),
                        "steps": s.steps, "guidance_scale": s.guidance_scale,
                        "max_megapixel_steps": work_budget(section), "native_pixels": section.NATIVE_PIXELS,
                        "service_caps": asdict(s.service),
                        "control": {"model": public_name(section.controlnet.model) if section.controlnet.model else None,
                                    "render": section.controlnet.render, "scale": section.controlnet.scale,
                                    "start": section.controlnet.start, "end": section.controlnet.end}}
    return info
