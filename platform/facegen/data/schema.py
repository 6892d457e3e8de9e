"""The on-disk rows of a facegen dataset (DESIGN.md "Data on disk") and their image encoding.

selfaug/*.parquet — every scored editing triplet; `kept` marks the top fraction per prompt:
    identity, source_face (aligned PNG), prompt (with S*), edited_image (PNG), id_score, clip_score, kept
ffhq/*.parquet — reconstruction rows:
    identity (file id), source_face (aligned PNG), prompt (a caption with S*), target_image (PNG)
Both may carry cached VAE latents: latents (float16 bytes) + latents_shape.
_state/*.parquet — identities / files rejected by a stage (no_face, too_small, unreadable), so counts and
`--resume` survive restarts.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import PIL.Image
import pyarrow as pa

from facegen.errors import ConfigError

SELFAUG_COLUMNS = ("identity", "source_face", "prompt", "edited_image", "id_score", "clip_score", "kept")
FFHQ_COLUMNS = ("identity", "source_face", "prompt", "target_image")
LATENT_COLUMNS = ("latents", "latents_shape")

SELFAUG_SCHEMA = pa.schema([
    ("identity", pa.string()), ("source_face", pa.binary()), ("prompt", pa.string()), ("prompt_index", pa.int32()),
    ("edited_image", pa.binary()), ("id_score", pa.float32()), ("clip_score", pa.float32()), ("kept", pa.bool_()),
])
FFHQ_SCHEMA = pa.schema([
    ("identity", pa.string()), ("source_face", pa.binary()), ("prompt", pa.string()), ("target_image", pa.binary()),
])
STATE_SCHEMA = pa.schema([("kind", pa.string()), ("identity", pa.string()), ("status", pa.string())])
LATENT_FIELDS = [("latents", pa.binary()), ("latents_shape", pa.list_(pa.int32()))]


def with_latents(schema: pa.Schema) -> pa.Schema:
    for name, tp in LATENT_FIELDS:
        schema = schema.append(pa.field(name, tp))
    return schema


def png_bytes(image: PIL.Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes → H×W×3 uint8 RGB."""
    with PIL.Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def encode_latents(latents: np.ndarray) -> tuple[bytes, list[int]]:
    arr = np.ascontiguousarray(latents, dtype=np.float16)
    return arr.tobytes(), list(arr.shape)


def decode_latents(data: bytes, shape) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float16).reshape(tuple(shape)).astype(np.float32)


def stable_seed(*parts) -> int:
    """A seed that depends only on its parts (not on Python's per-process hash salt)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def check_columns(schema: pa.Schema, required, where: str) -> None:
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise ConfigError(f"{where} lacks the column(s) {', '.join(missing)}: is it the output of jobs/build_data.py?")
