"""The public HTTP API (DESIGN.md "HTTP API"): request models, limits, auth and the error contract.

Every error is `{"error": {"code", "message"}}`: 400 invalid_image / no_face / bad_prompt / invalid_identity,
401 unauthorized, 413 too_large, 422 validation, 503 overloaded. A user mistake never yields a 5xx.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from facegen.errors import FacegenError, InvalidImage

log = logging.getLogger("facegen.serve")
DEFAULT_MAX_BODY = 10 * 1024 * 1024
METHODS = ("dreamidentity", "faceclip")
STATUS = {"invalid_image": 400, "no_face": 400, "bad_prompt": 400, "invalid_identity": 400, "validation": 422}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["dreamidentity", "faceclip"]
    face_image: str | None = Field(None, description="base64 PNG/JPEG of the person", max_length=20_000_000)
    identity: str | None = Field(None, description="a token from /v1/encode, instead of face_image", max_length=1_000_000)

    @model_validator(mode="after")
    def _one_face_source(self):
        if (self.face_image is None) == (self.identity is None):
            raise ValueError("give exactly one of face_image (base64 photo) or identity (token from /v1/encode)")
        return self


class EncodeRequest(_Request):
    pass


class GenerateRequest(_Request):
    prompt: str = Field(..., min_length=1, max_length=1000)
    negative_prompt: str | None = Field(None, max_length=1000)
    num_images: int = Field(1, ge=1, le=4)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    steps: int | None = Field(None, ge=1, le=100)
    guidance_scale: float | None = Field(None, ge=0.0, le=30.0)
    width: int | None = Field(None, ge=256, le=2048, multiple_of=8)
    height: int | None = Field(None, ge=256, le=2048, multiple_of=8)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def decode_base64_image(data: str) -> bytes:
    if data.startswith("data:") and "," in data:  # a data URL from a browser
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("face_image is not valid base64") from None
    if not raw:
        raise InvalidImage("face_image is empty")
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


async def read_body(request: Request, model: type[BaseModel], max_body: int) -> BaseModel:
    """Size cap first (Content-Length, then the bytes actually read), then JSON, then the schema."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_body:
        raise ApiError(413, "too_large", f"request body over {max_body} bytes")
    body = await request.body()
    if len(body) > max_body:
        raise ApiError(413, "too_large", f"request body over {max_body} bytes")
    try:
        return model.model_validate_json(body)
    except ValueError as e:
        errors = getattr(e, "errors", lambda: [])()
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = f"{where}: {first.get('msg')}" if first else str(e)
        raise ApiError(422, "validation", message) from None


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
