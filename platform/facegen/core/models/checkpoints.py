"""Reading published checkpoints and writing safetensors without a second copy in memory.

`read_checkpoint` memory-maps a torch.save'd state dict (weights_only: no pickle code runs); `check_state` compares it
key for key and shape for shape with what a model expects; `write_safetensors` / `write_sharded` stream tensors to
disk one at a time — safetensors' own save_file builds every tensor's bytes first, which for a 24 GB DiT is a second
24 GB. Every file is written under a temporary name and renamed.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
from pathlib import Path

import torch

from facegen.core.errors import FacegenError, ModelNotFound

SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                      torch.bool: "BOOL"}


def snapshot(path: str | os.PathLike, into: str | os.PathLike, what: str) -> tuple[Path, str]:
    """A private copy of an input file in `into` and its sha256, from one sequential read: what is converted is
    what was hashed, whatever happens to the original meanwhile (rewritten, truncated: a memory-mapped original
    truncated under the reader would kill the process)."""
    import hashlib

    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelNotFound(f"{what} {p} not found")
    Path(into).mkdir(parents=True, exist_ok=True)
    copy, digest = Path(into) / p.name, hashlib.sha256()
    with open(p, "rb") as src, open(copy, "wb") as dst:
        while chunk := src.read(16 * 2**20):
            digest.update(chunk)
            dst.write(chunk)
    return copy, digest.hexdigest()


@contextlib.contextmanager
def failures_in_one_line(out: Path):
    """Writing an export after its inputs were checked: any failure (a full disk, a file that changed under the
    reader) is one line naming the output, and the caller's temporary directory goes (nothing is left behind)."""
    try:
        yield
    except FacegenError:
        raise
    except Exception as e:  # noqa: BLE001 — whatever it is, the user gets one line, not a traceback
        raise FacegenError(f"writing {out} failed, nothing was written: {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None


def check_tensors(state: dict[str, torch.Tensor], what: str) -> None:
    """Every tensor contiguous (a stride-0 view of one value would expand to its whole shape on export) and of a
    dtype safetensors can hold (a complex one cannot)."""
    for key, t in state.items():
        if t.dtype not in SAFETENSORS_DTYPES:
            raise ModelNotFound(f"{what}: {key} is {str(t.dtype).removeprefix('torch.')}, which no model here holds")
        if not t.is_contiguous():
            raise ModelNotFound(f"{what}: {key} is not stored whole (strides {tuple(t.stride())} for shape "
                                f"{tuple(t.shape)}): a tensor that expands on export is refused")


def read_checkpoint(path: str | os.PathLike, what: str, shown: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """A torch.save'd state dict, tensors only (weights_only=True, memory-mapped: nothing is read until used);
    `shown`: the path errors name (the user's file, when `path` is its private snapshot)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelNotFound(f"{what} {p} not found")
    name = Path(shown) if shown is not None else p
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise ModelNotFound(f"{what} {name} needs pickle to load, which runs code: refused "
                            f"({str(e).splitlines()[0][:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ModelNotFound(f"{what} {name} is not a torch.save'd checkpoint: {str(e).splitlines()[0][:160]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelNotFound(f"{what} {name} does not hold a state dict (names → tensors)")
    return state


def check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], what: str, hint: str) -> None:
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ModelNotFound(f"{what} does not fit {hint}: {len(missing)} missing ({', '.join(missing[:3])}), "
                            f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
    for key, shape in expected.items():
        if state[key].shape != shape:
            raise ModelNotFound(f"{what}: {key} has shape {tuple(state[key].shape)}, {hint} expects {tuple(shape)}")
    check_tensors(state, what)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
    """The safetensors format (8-byte header length, JSON header, raw little-endian data), one tensor at a time."""
    path = Path(path)
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for key in sorted(tensors):
        t = tensors[key]
        if t.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{key}: dtype {t.dtype} has no safetensors name")
        header[key] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + _nbytes(t)]}
        offset += _nbytes(t)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for key in sorted(tensors):
            t = tensors[key].detach().to("cpu").contiguous().reshape(-1)
            f.write(t.view(torch.uint8).numpy().data)
    os.replace(tmp, path)
    return path


def write_sharded(directory: str | os.PathLike, tensors: dict[str, torch.Tensor], name: str,
                  max_shard_bytes: int = 5 * 2**30) -> list[Path]:
    """A state dict in shards as diffusers and transformers write them: NAME.safetensors when it fits one shard,
    else NAME-0000i-of-0000n.safetensors + NAME.safetensors.index.json (the weight map)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(tensors):
        n = _nbytes(tensors[key])
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += n
    if len(shards) == 1:
        return [write_safetensors(d / f"{name}.safetensors", shards[0], {"format": "pt"})]
    files, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        file = f"{name}-{i:05d}-of-{len(shards):05d}.safetensors"
        files.append(write_safetensors(d / file, shard, {"format": "pt"}))
        weight_map.update(dict.fromkeys(shard, file))
    index = {"metadata": {"total_size": sum(_nbytes(t) for t in tensors.values())}, "weight_map": weight_map}
    tmp = d / f".{name}.safetensors.index.json.tmp"
    tmp.write_text(json.dumps(index, indent=2))
    os.replace(tmp, d / f"{name}.safetensors.index.json")
    return files + [d / f"{name}.safetensors.index.json"]
