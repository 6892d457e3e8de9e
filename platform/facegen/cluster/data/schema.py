"""The on-disk rows of a facegen dataset (docs/DESIGN.md "Data on disk").

selfaug/*.parquet — every scored editing triplet; `kept` marks the top fraction per prompt:
    subject (the celebrity's name), source_face (aligned PNG), face_embedding (its recognizer vector), prompt
    (with S*), prompt_index, edited_image (PNG), id_score, clip_score, kept
ffhq/*.parquet — reconstruction rows:
    subject (the file's relative path), source_face (aligned PNG), face_embedding, prompt (a caption with S*),
    target_image (PNG)
Both may carry cached VAE latents: latents (float16 bytes) + latents_shape.
_state/*.parquet — subjects rejected by a stage (no_face, too_small, unreadable), so counts and `--resume` survive
restarts.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from facegen.core.errors import ConfigError

SELFAUG_SCHEMA = pa.schema([
    ("subject", pa.string()), ("source_face", pa.binary()), ("face_embedding", pa.list_(pa.float32())),
    ("prompt", pa.string()), ("prompt_index", pa.int32()), ("edited_image", pa.binary()), ("id_score", pa.float32()),
    ("clip_score", pa.float32()), ("kept", pa.bool_()),
])
FFHQ_SCHEMA = pa.schema([
    ("subject", pa.string()), ("source_face", pa.binary()), ("face_embedding", pa.list_(pa.float32())),
    ("prompt", pa.string()), ("target_image", pa.binary()),
])
STATE_SCHEMA = pa.schema([("kind", pa.string()), ("subject", pa.string()), ("status", pa.string())])
LATENT_FIELDS = [("latents", pa.binary()), ("latents_shape", pa.list_(pa.int32()))]


def with_latents(schema: pa.Schema) -> pa.Schema:
    for name, tp in LATENT_FIELDS:
        schema = schema.append(pa.field(name, tp))
    return schema


def encode_latents(latents: np.ndarray) -> tuple[bytes, list[int]]:
    arr = np.ascontiguousarray(latents, dtype=np.float16)
    return arr.tobytes(), list(arr.shape)


def decode_latents(data: bytes, shape) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float16).reshape(tuple(shape)).astype(np.float32)


def check_columns(schema: pa.Schema, required, where: str) -> None:
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise ConfigError(f"{where} lacks the column(s) {', '.join(missing)}: is it the output of this version's "
                          f"jobs/build_data.py?")
