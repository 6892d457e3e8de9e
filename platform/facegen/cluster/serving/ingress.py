"""The service's HTTP front: the FastAPI ingress (checks, auth, control images, retries on lost replicas), which
watermarks and encodes the generators' arrays in its own threads, so a GPU replica goes straight on to its next batch.

    HTTP → Ingress ──encode──▶ FaceEncoder ──token──▶ <Method>Generator ──arrays──▶ Ingress → png | jpeg | webp
"""
# No `from __future__ import annotations` here: the handlers go to FastAPI, which must see `Request` as the class
# itself to inject it (a string annotation fails every request).

import asyncio
import base64
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
import PIL.Image
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from ray import serve

from facegen.cluster.serving import watermark
from facegen.cluster.serving.api import (
    ApiError,
    BodyLimits,
    BodySlots,
    ControlRequest,
    EncodeRequest,
    GenerateRequest,
    api_keys,
    check_auth,
    decode_base64_image,
    error_body,
    install_error_handlers,
    read_body,
)
from facegen.cluster.serving.batching import DrawRequest
from facegen.core.control import Control, fit_control_image, head_control_image, resolve
from facegen.core.errors import FacegenError
from facegen.core.face.images import load_image
from facegen.core.methods import REGISTRY, get_method
from facegen.core.methods.base import ControlNetConfig, SamplingConfig, request_work
from facegen.core.plan import GenerationPlan

log = logging.getLogger("facegen.serve")


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


# The control inputs as the HTTP body names them, for control.resolve's errors.
CONTROL_FIELDS = {"head_box": "control.head_box", "pose_image": "control.pose_image",
                  "control_image": "control.control_image"}


def _control_image(data: str, width: int, height: int):
    """A client's control image (base64) → (the image at the canvas size, a note if it was resized)."""
    name = CONTROL_FIELDS["control_image"]
    return fit_control_image(PIL.Image.fromarray(load_image(decode_base64_image(data, name), name=name)), width, height)


def _unwrap(exc: Exception) -> Exception:
    return getattr(exc, "cause", None) or exc  # Ray wraps a replica's exception; keep the user's message


class Ingress:
    """The HTTP front, a plain class: `asgi_app()` is its FastAPI app, built per instance (its own keys and CORS), so
    a test drives the whole request path with FastAPI's TestClient and no Ray. `IngressDeployment` serves it.
    `encoder` and `generators` are Serve handles (anything whose methods have `.remote(...)`)."""

    def __init__(self, encoder, generators: dict, preset: str, max_body: int, model_info: dict,
                 cors: list | None = None, keys: list[str] | None = None, body: BodyLimits | None = None):
        self.encoder, self.generators, self.preset, self.max_body = encoder, generators, preset, max_body
        # how bodies are read (deadline, pace, slots per client), with this service's size cap
        self.body = dataclasses.replace(body or BodyLimits(), max_bytes=max_body)
        self.body_slots = BodySlots()
        self.methods, self.model_info, self.cors = list(generators), model_info, list(cors or [])
        self.image_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="image-encode")  # numpy/Pillow release the GIL
        self.keys = list(keys) if keys is not None else api_keys()
        if not self.keys:
            log.warning("facegen: no FACEGEN_API_KEYS set — the API is open to anyone who can reach it")

    def asgi_app(self) -> FastAPI:
        app = FastAPI(title="facegen", version="2",
                      description="Identity-preserving portrait generation (DreamIdentity, FaceCLIP, FaceT5-FLUX).")
        install_error_handlers(app)
        if self.keys:  # every route but the health check and the page needs a key (the schema and docs included)
            app.add_middleware(KeyMiddleware, keys=self.keys)
        if self.cors:
            from fastapi.middleware.cors import CORSMiddleware

            app.add_middleware(CORSMiddleware, allow_origins=self.cors, allow_methods=["GET", "POST"], allow_headers=["*"])
        app.post("/v1/encode", openapi_extra=_body_schema(EncodeRequest))(self.encode)
        app.post("/v1/generate", openapi_extra=_body_schema(GenerateRequest))(self.generate)
        app.get("/healthz")(self.healthz)
        app.get("/v1/models")(self.models)
        app.get("/v1/stats")(self.stats)
        app.get("/", response_class=HTMLResponse)(self.page)
        return app

    def __serve_build_asgi_app__(self):  # Serve's late-bound ingress: the app is built in the replica, after __init__
        return self.asgi_app()

    # A replica that dies mid-request (a crashed node, a killed process) takes its in-flight requests with it. Drawing
    # is deterministic for a given request (seeded) and its inputs are already checked, so the ingress sends a
    # generate again — Serve routes it to a live replica, or queues it until the controller has replaced the dead
    # one. A face-encoder call is not sent again: its photos may be what killed the replica.
    replica_retries = 2

    async def _call(self, method, *args, replay: bool = True):
        from ray.exceptions import ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError

        for attempt in range(self.replica_retries + 1 if replay else 1):
            try:
                return await method.remote(*args)
            except BackPressureError:
                raise ApiError(503, "overloaded", "the service is at capacity: retry in a moment") from None
            except FacegenError as e:
                raise _unwrap(e) from None
            except (RayActorError, ActorUnavailableError) as e:
                log.warning("a replica was lost during a request (%s): attempt %d of %d", type(e).__name__,
                            attempt + 1, self.replica_retries + 1 if replay else 1)
        if not replay:
            raise ApiError(503, "unavailable", "the replica reading this request's photos was lost; it is not sent "
                                               "again (its photos may be why): retry with other photos")
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
                           f"this request asks for {work:.0f} megapixel-steps (width × height × (steps + decoding) × "
                           f"num_images, more for canvases over {info['native_pixels'] / 1e6:.2g} MP and with control); "
                           f"{req.method} allows at most {info['max_megapixel_steps']:g} here: ask for fewer or "
                           f"smaller images or fewer steps")

    async def _encode(self, req) -> dict:
        photos = req.photos()
        names = ["face_image"] if req.face_image is not None else [f"face_images[{i}]" for i in range(len(photos))]
        images = [decode_base64_image(p, n) for p, n in zip(photos, names)]
        return await self._call(self.encoder.encode, req.method, images, replay=False)

    async def encode(self, request: Request):
        req = await read_body(request, EncodeRequest, self.body, self.body_slots)
        self._served(req.method)
        if req.identity_token is not None:
            raise ApiError(422, "validation", "/v1/encode needs face_image or face_images")
        out = await self._encode(req)
        return {"identity_token": out["identity_token"], "faces": out["faces"]}

    async def generate(self, request: Request):
        start = time.perf_counter()
        req = await read_body(request, GenerateRequest, self.body, self.body_slots)
        method = self._served(req.method)
        # The pipeline's own input checks (S* rule, sizes), without torch, before any replica works on the request.
        method.check_inputs(req.prompt, req.negative_prompt or "", req.height, req.width)
        self._check_work(req)
        info = self.model_info[req.method]
        width, height = req.width or info["default_size"][0], req.height or info["default_size"][1]
        c = req.control or ControlRequest.model_construct()
        rules = resolve(ControlNetConfig(**info["control"]), width, height, c.head_box, c.pose_image, c.control_image,
                        c.scale, c.start, c.end, names=CONTROL_FIELDS, key=f"methods.{req.method}.controlnet")
        if rules is not None and rules.control_image is not None:
            # Decoding user bytes is CPU work of unbounded cost: on the thread pool, never in this event loop
            # (which answers /healthz and every other request), and shrunk to the canvas at once.
            control_image, note = await asyncio.get_running_loop().run_in_executor(
                self.image_pool, _control_image, rules.control_image, width, height)
        encoded = await self._encode(req) if req.identity_token is None else None
        token = encoded["identity_token"] if encoded else req.identity_token
        seed = req.seed if req.seed is not None else int.from_bytes(np.random.bytes(4), "little") & 0x7FFFFFFF
        notes, control = [], None
        if rules is not None:
            if rules.head_box is not None:  # posed as the pose photo's face, else the face photo's, else frontal
                pose = (await self._call(self.encoder.pose, req.method,
                                         decode_base64_image(rules.pose_image, "control.pose_image"), replay=False)
                        if rules.pose_image is not None else encoded["pose"] if encoded else None)
                face = (np.array(pose["kps"]), np.array(pose["bbox"])) if pose else None
                image = head_control_image(width, height, rules.head_box, face, info["control"]["render"])
            else:
                image = control_image
                notes += [note] if note else []
            control = Control(image=[image], scale=rules.scale, start=rules.start, end=rules.end)
        # The request resolved once, here: the replica draws this plan as it is.
        sampling = SamplingConfig(steps=info["steps"], guidance_scale=info["guidance_scale"], width=width, height=height,
                                  negative_prompt=info["negative_prompt"])
        sampling = sampling.resolve(req.steps, req.guidance_scale, negative_prompt=req.negative_prompt)
        draw = DrawRequest(prompt=req.prompt, identity_token=token, seed=seed,
                           plan=GenerationPlan.from_sampling(sampling, req.num_images, control))
        out = await self._call(self.generators[req.method].generate, draw)
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

    async def healthz(self):
        return {"status": "ok"}

    async def models(self):
        # From the ingress's own state (what the builder gave every replica): no call reaches a GPU replica.
        return {"methods": self.methods, "preset": self.preset, "models": self.model_info, "max_body_bytes": self.max_body,
                "num_images": [1, 4]}

    async def stats(self):
        return {m: await self._call(self.generators[m].stats) for m in self.methods}

    async def page(self):
        options = "\n".join(
            f'      <option value="{m}" data-placeholder="{"yes" if REGISTRY[m].needs_placeholder else "no"}" '
            f'data-width="{self.model_info[m]["default_size"][0]}" data-height="{self.model_info[m]["default_size"][1]}">'
            f'{REGISTRY[m].title}{" (write S* where the person goes)" if REGISTRY[m].needs_placeholder else ""}</option>'
            for m in self.methods)
        html = resources.files("facegen.cluster.serving").joinpath("index.html").read_text()
        return html.replace("<!--METHOD_OPTIONS-->", options)


IngressDeployment = serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=100,
                                     max_queued_requests=200)(serve.ingress()(Ingress))
