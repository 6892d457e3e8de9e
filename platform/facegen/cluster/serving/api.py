"""The public HTTP API (docs/DESIGN.md "HTTP API"): request models, limits, auth and the error contract.

Every error is `{"error": {"code", "message"}}`: 400 invalid_image / no_face / bad_prompt / invalid_identity,
401 unauthorized, 408 timeout (a body sent too slowly), 413 too_large, 415 unsupported_media_type, 422 validation,
429 too_many_uploads (a client's body slots are full), 499 client_closed (the client left mid-body), 503 overloaded /
generation_failed /
unavailable (the replicas for a request were lost even after retries).
A user mistake never yields a 5xx. The `method` enum is the method registry's.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from facegen.core.errors import FacegenError, InvalidImage
from facegen.core.methods import NAMES
from facegen.core.methods.base import SAMPLING_BOUNDS as BOUNDS
from facegen.core.sampling import SIZE_MULTIPLE

log = logging.getLogger("facegen.serve")
DEFAULT_MAX_BODY = 10 * 1024 * 1024
MAX_FACE_IMAGES = 8
STATUS = {"invalid_image": 400, "no_face": 400, "bad_prompt": 400, "invalid_identity": 400, "timeout": 408,
          "too_large": 413, "validation": 422, "too_many_uploads": 429, "client_closed": 499, "generation_failed": 503}
MethodName = Literal[NAMES]  # type: ignore[valid-type]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: MethodName
    face_image: str | None = Field(None, description="base64 PNG/JPEG/WebP of the person", max_length=20_000_000)
    face_images: list[str] | None = Field(None, description="several base64 photos of one person (averaged)",
                                          min_length=1, max_length=MAX_FACE_IMAGES)
    # The largest identity is the published FaceCLIP's (2×512 + 2×144×768 float32): its token is ~1.6 MB.
    identity_token: str | None = Field(None, description="a token from /v1/encode, instead of photos",
                                       max_length=4_000_000)

    @model_validator(mode="after")
    def _one_face_source(self):
        given = [x is not None for x in (self.face_image, self.face_images, self.identity_token)]
        if sum(given) != 1:
            raise ValueError("give exactly one of face_image (a base64 photo), face_images (several photos of one "
                             "person) or identity_token (from /v1/encode)")
        return self

    def photos(self) -> list[str] | None:
        return [self.face_image] if self.face_image is not None else self.face_images


class EncodeRequest(_Request):
    pass


class ControlRequest(BaseModel):
    """Scene switch through the method's ControlNet: a head box (posed as pose_image's face, else as the face
    photo's, else frontal) or a ready control image; strength and guidance window default to the preset's. The rules
    (one of the two, a pose only with a box, the box on the canvas) are `facegen.core.control.resolve`'s."""

    model_config = ConfigDict(extra="forbid")
    head_box: list[float] | None = Field(None, min_length=4, max_length=4,
                                         description="[x, y, w, h] in pixels of the output image: where the head goes")
    pose_image: str | None = Field(None, max_length=20_000_000,
                                   description="base64 photo whose face gives the head's pose (with head_box)")
    control_image: str | None = Field(None, max_length=20_000_000,
                                      description="base64 ready control image (OpenPose, depth, canny … for the "
                                                  "method's ControlNet); another size than the output is resized")
    scale: float | None = Field(None, ge=0.0, le=4.0, description="controlnet_conditioning_scale")
    start: float | None = Field(None, ge=0.0, le=1.0, description="fraction of the steps where control starts")
    end: float | None = Field(None, ge=0.0, le=1.0, description="fraction of the steps where control ends")


class GenerateRequest(_Request):
    prompt: str = Field(..., min_length=1, max_length=1000)
    negative_prompt: str | None = Field(None, max_length=1000)
    # What any caller may ask (methods.base.SAMPLING_BOUNDS, as the CLI and the pipelines check it); the service's
    # own, tighter caps per method (methods.<m>.sampling.service) are checked by the ingress and shown in /v1/models.
    num_images: int = Field(1, ge=BOUNDS["num_images"][0], le=BOUNDS["num_images"][1])
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    steps: int | None = Field(None, ge=BOUNDS["steps"][0], le=BOUNDS["steps"][1])
    guidance_scale: float | None = Field(None, ge=BOUNDS["guidance_scale"][0], le=BOUNDS["guidance_scale"][1],
                                         allow_inf_nan=False)
    width: int | None = Field(None, ge=BOUNDS["width"][0], le=BOUNDS["width"][1], multiple_of=SIZE_MULTIPLE)
    height: int | None = Field(None, ge=BOUNDS["height"][0], le=BOUNDS["height"][1], multiple_of=SIZE_MULTIPLE)
    format: Literal["png", "jpeg", "webp"] = Field("png", description="image format; every format carries the "
                                                   "watermark and the provenance metadata")
    # Below JPEG quality 90 the invisible watermark no longer reads back (measured: 85 → 42/48 bits, 80 → chance).
    quality: int = Field(95, ge=90, le=100, description="JPEG quality (90-100: lower erases the watermark), or "
                                                        "WebP (lossless) compression effort")
    control: ControlRequest | None = Field(None, description="scene switch: where the head goes, or a control image")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def decode_base64_image(data: str, name: str = "face_image") -> bytes:
    if data.startswith("data:") and "," in data:  # a data URL from a browser
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{name} is not valid base64") from None
    if not raw:
        raise InvalidImage(f"{name} is empty")
    return raw


def api_keys() -> list[str]:
    return [k.strip() for k in os.environ.get("FACEGEN_API_KEYS", "").split(",") if k.strip()]


def check_auth(request: Request, keys: list[str]) -> None:
    if not keys:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):  # constant time per key
        raise ApiError(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)")


@dataclass(frozen=True)
class BodyLimits:
    """How a request body is read: at most `max_bytes`, within `timeout_s` in all, at `min_rate` bytes a second on
    average once `grace_s` has passed (a client that trickles a byte every few seconds is cut, not waited for), and
    at most `per_client` bodies read at once per client (its API key, else its address): the slots one slow client
    can hold."""

    max_bytes: int = DEFAULT_MAX_BODY
    timeout_s: float = 60.0
    min_rate: float = 16 * 1024
    grace_s: float = 5.0
    per_client: int = 8


class BodySlots:
    """Bodies being read, per client: `take` refuses (429) a client that already holds `per_client` of them."""

    def __init__(self):
        self.reading: dict[str, int] = {}

    @contextlib.contextmanager
    def take(self, client: str, limit: int):
        if self.reading.get(client, 0) >= limit:
            raise ApiError(429, "too_many_uploads", f"this client is already sending {limit} requests: wait for one "
                                                    "to finish")
        self.reading[client] = self.reading.get(client, 0) + 1
        try:
            yield
        finally:
            self.reading[client] -= 1
            if not self.reading[client]:
                del self.reading[client]


def client_of(request: Request) -> str:
    """Who holds a body slot: the API key's fingerprint when one is sent (behind a proxy every client shares an
    address), else the address."""
    header = request.headers.get("authorization", "") or request.headers.get("x-api-key", "")
    if header:
        return "key:" + hashlib.sha256(header.encode()).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "?")


async def read_body(request: Request, model: type[BaseModel], limits: BodyLimits,
                    slots: BodySlots | None = None) -> BaseModel:
    """JSON only; the size cap holds while reading (a chunked body without Content-Length is read incrementally
    and refused once it passes the cap), and so do the deadline and the minimum rate (408) and the client's slots
    (429); a client that goes away mid-body is a 499, not a server error; then the schema."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the request as JSON (Content-Type: application/json)")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limits.max_bytes:
        await _drain(request, 0)
        raise ApiError(413, "too_large", f"request body over {limits.max_bytes} bytes")
    with (slots or BodySlots()).take(client_of(request), limits.per_client):
        body = await _read_within(request, limits)
    try:
        return model.model_validate_json(bytes(body))
    except ValueError as e:
        errors = getattr(e, "errors", lambda: [])()
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = f"{where}: {first.get('msg')}" if first else str(e)
        raise ApiError(422, "validation", message) from None


async def _read_within(request: Request, limits: BodyLimits) -> bytearray:
    from starlette.requests import ClientDisconnect

    loop = asyncio.get_running_loop()
    start, body = loop.time(), bytearray()
    chunks = request.stream().__aiter__()
    while True:
        elapsed = loop.time() - start
        # the next byte is due by the total deadline and by the pace min_rate sets (after the grace period)
        due = min(limits.timeout_s, max(limits.grace_s, (len(body) + 1) / limits.min_rate)) - elapsed
        try:
            if due <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(chunks.__anext__(), due)
        except StopAsyncIteration:
            return body
        except asyncio.TimeoutError:
            raise ApiError(408, "timeout", f"the request body came too slowly ({len(body)} bytes in {elapsed:.0f} s; "
                                           f"send it within {limits.timeout_s:g} s, at {limits.min_rate / 1024:g} KiB/s "
                                           "or faster)") from None
        except ClientDisconnect:
            raise ApiError(499, "client_closed", "the client closed the connection before its request was read") \
                from None
        body += chunk
        if len(body) > limits.max_bytes:
            await _drain(request, len(body))
            raise ApiError(413, "too_large", f"request body over {limits.max_bytes} bytes")


DRAIN_LIMIT = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0


async def _drain(request: Request, seen: int) -> None:
    """Before the 413: read (and drop) what is left of the over-size body, for at most DRAIN_SECONDS and DRAIN_LIMIT
    bytes in all, so a client still writing it reads the 413 instead of a connection reset (Serve's proxy closes the
    connection once the answer is out, so the drain cannot follow the answer), and one that stopped mid-body gets its
    answer when the time is up rather than never."""
    async def drop(seen: int) -> None:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                return

    try:
        await asyncio.wait_for(drop(seen), DRAIN_SECONDS)
    except Exception:  # noqa: BLE001 — time is up, the stream was consumed, or the client went away: stop draining
        return


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(FacegenError)
    async def _facegen_error(_request, exc: FacegenError):
        code = getattr(exc, "code", "bad_request")
        return JSONResponse(error_body(code, str(exc)), status_code=STATUS.get(code, 400))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return JSONResponse(error_body("validation", str(first.get("msg", exc))), status_code=422)
