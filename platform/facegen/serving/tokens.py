"""Signed identity tokens: /v1/encode returns one (`identity_token`), /v1/generate accepts it instead of photos.

token = base64url(JSON payload) "." base64url(HMAC-SHA256(key, payload)). The payload carries the method, the
encoder's id (so a token from another model is refused) and the identity's arrays (`Identity.to_arrays`, float32). The key comes
from FACEGEN_TOKEN_KEY or is generated at start-up and shared by the replicas through the application's arguments,
so any replica can verify any token and replicas stay stateless.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets

import numpy as np

from facegen.errors import FacegenError


class BadToken(FacegenError):
    code = "invalid_identity"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_key() -> bytes:
    env = os.environ.get("FACEGEN_TOKEN_KEY")
    return env.encode() if env else secrets.token_bytes(32)


def sign(key: bytes, method: str, encoder_id: str, arrays: dict[str, np.ndarray]) -> str:
    payload = {"v": 1, "method": method, "encoder": encoder_id,
               "arrays": {k: {"shape": list(a.shape), "data": _b64(np.ascontiguousarray(a, np.float32).tobytes())}
                          for k, a in arrays.items()}}
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def verify(key: bytes, token: str, method: str, encoder_id: str) -> dict[str, np.ndarray]:
    try:
        body_part, mac_part = token.split(".")
        body, mac = _unb64(body_part), _unb64(mac_part)
    except (ValueError, AttributeError):
        raise BadToken("identity is not a facegen identity token") from None
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise BadToken("identity token signature does not match: it was altered or issued by another service")
    payload = json.loads(body)
    if payload.get("method") != method:
        raise BadToken(f"identity token was made for method '{payload.get('method')}', not '{method}'")
    if payload.get("encoder") != encoder_id:
        raise BadToken("identity token was made by another encoder model: encode the face again")
    return {k: np.frombuffer(_unb64(v["data"]), np.float32).reshape(v["shape"]).copy()
            for k, v in payload["arrays"].items()}
