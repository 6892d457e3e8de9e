"""Identity tokens: /v1/encode returns one (`identity_token`), /v1/generate accepts it instead of photos.

A token is opaque: AES-256-GCM (authenticated encryption, `cryptography`) of a JSON payload holding the method, the
id of the encoder that made it, an expiry time and the identity's arrays (`Identity.to_arrays`, float32). Nobody
without the key can read the face data (a biometric template) or alter it; a token made for another method or
encoder, or past its expiry, is refused with a reason.

    token = "v2." base64url(key id (4 bytes) ‖ nonce (12 bytes) ‖ ciphertext+tag)

Keys: FACEGEN_TOKEN_KEY="new,old,…" — each at least 32 bytes; the first encrypts, all decrypt (rotation: put the new
key first, drop an old one once its tokens have expired). Without it, a random key is generated at start-up and
shared by the deployment's replicas: tokens then die with the deployment. The key id lets a replica pick the right
key without trying them all.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time

import numpy as np

from facegen.core.errors import ConfigError, FacegenError

log = logging.getLogger("facegen.serve")
VERSION = "v2"
MIN_KEY_BYTES = 32
DEFAULT_TTL_S = 24 * 3600


class BadToken(FacegenError):
    code = "invalid_identity"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_keys(env: str | None = None) -> list[bytes]:
    """The token keys: FACEGEN_TOKEN_KEY (comma-separated, newest first, each ≥ 32 bytes) or one random key."""
    env = os.environ.get("FACEGEN_TOKEN_KEY") if env is None else env
    if not env:
        log.warning("facegen: no FACEGEN_TOKEN_KEY set — identity tokens use a key made at start-up and die with "
                    "this deployment")
        return [secrets.token_bytes(32)]
    keys = [k.strip().encode() for k in env.split(",") if k.strip()]
    short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_BYTES]
    if short:
        raise ConfigError(f"FACEGEN_TOKEN_KEY: key {short[0] + 1} is shorter than {MIN_KEY_BYTES} bytes "
                          f"(use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return keys


def _aes_key(key: bytes) -> bytes:
    return hashlib.sha256(b"facegen identity token\x00" + key).digest()


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"facegen key id\x00" + key).digest()[:4]


def seal(keys: list[bytes], method: str, encoder_id: str, arrays: dict[str, np.ndarray],
         ttl_s: float = DEFAULT_TTL_S) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    payload = {"method": method, "encoder": encoder_id, "exp": int(time.time() + ttl_s),
               "arrays": {k: {"shape": list(a.shape), "data": _b64(np.ascontiguousarray(a, np.float32).tobytes())}
                          for k, a in arrays.items()}}
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_aes_key(keys[0])).encrypt(nonce, json.dumps(payload, separators=(",", ":")).encode(),
                                               VERSION.encode())
    return f"{VERSION}.{_b64(_key_id(keys[0]) + nonce + sealed)}"


def open_token(keys: list[bytes], token: str, method: str, encoder_id: str) -> dict[str, np.ndarray]:
    """The identity's arrays, or BadToken saying why (unreadable, altered/foreign, expired, other method/encoder)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        version, body = token.split(".")
        raw = _unb64(body)
    except (ValueError, AttributeError):
        raise BadToken("identity_token is not a facegen identity token") from None
    if version != VERSION or len(raw) < 4 + 12 + 16:
        raise BadToken("identity_token is not a facegen identity token (or one from an older version: encode again)")
    key_id, nonce, sealed = raw[:4], raw[4:16], raw[16:]
    key = next((k for k in keys if _key_id(k) == key_id), None)
    try:
        if key is None:
            raise InvalidTag
        payload = json.loads(AESGCM(_aes_key(key)).decrypt(nonce, sealed, VERSION.encode()))
    except InvalidTag:
        raise BadToken("identity_token was altered or issued by another service (or with a retired key): "
                       "encode the face again") from None
    if payload["exp"] < time.time():
        raise BadToken("identity_token has expired: encode the face again")
    if payload["method"] != method:
        raise BadToken(f"identity_token was made for method '{payload['method']}', not '{method}'")
    if payload["encoder"] != encoder_id:
        raise BadToken("identity_token was made by another encoder model: encode the face again")
    return {k: np.frombuffer(_unb64(v["data"]), np.float32).reshape(v["shape"]).copy()
            for k, v in payload["arrays"].items()}
