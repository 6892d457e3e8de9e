"""Reading user images into RGB uint8 arrays, with clear errors for anything that is not a picture, and the PNG
encoding every stored image goes through."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, MpoImagePlugin, UnidentifiedImageError, WebPImagePlugin  # noqa: F401 — loaded, so a JPEG with frames and WebP open

from facegen.core.errors import ImageTooLarge, InvalidImage

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

# Decoded-pixel cap: a 10 MB PNG can decode to gigabytes (a decompression bomb). 40 MP is larger than any phone photo.
MAX_PIXELS = 40_000_000
# Long side ÷ short side: a 5,000,000×8 strip is no photo of a face, and detectors' resizing misbehaves on it.
MAX_ASPECT = 20
# Only these decoders run on user bytes: the formats people send (a phone's JPEG may be an MPO — a JPEG with more
# frames, which Pillow's JPEG opener returns as format "MPO"). Pillow's rarer formats are a larger attack surface for
# no use here, and some decode in pure Python (BMP's RLE: a 26 KB file held the GIL for seconds).
FORMATS = ("JPEG", "PNG", "WEBP")
READABLE = "JPEG, PNG or WebP"


def load_image(src: ImageInput, max_pixels: int = MAX_PIXELS, name: str = "the uploaded bytes") -> np.ndarray:
    """Return an H×W×3 RGB uint8 array from a path, encoded bytes, a PIL image or an array (RGB, HW, or RGBA).
    `name`: what the errors call encoded bytes (e.g. the request field they came in)."""
    if isinstance(src, np.ndarray):
        return _from_array(src)
    if isinstance(src, Image.Image):
        return _from_pil(src, max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return decode_untrusted(bytes(src), name, max_pixels)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise InvalidImage(f"{path}: no such file")
        return decode_untrusted(path.read_bytes(), str(path), max_pixels)
    raise InvalidImage(f"cannot read an image from a {type(src).__name__}")


def decode_untrusted(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded bytes from a user → RGB uint8, decoded in the sandbox (facegen.core.face.sandbox: a child process
    under CPU-time and memory limits); a decode that overruns them is one InvalidImage naming `name`."""
    from facegen.core.face.sandbox import decode_pool

    return decode_pool().decode(data, name, max_pixels).rgb


def decode_untrusted_here(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The decode itself, in this process (what a sandbox worker runs): the cheap checks first, then Pillow."""
    return _from_pil(_open(io.BytesIO(data), name), max_pixels)


# A progressive JPEG may repeat scans: each makes the decoder walk the whole coefficient buffer again, so a small file
# of thousands of scans costs minutes of CPU (a "scan bomb"). Real encoders write at most a dozen or so.
MAX_JPEG_SCANS = 64


# Markers without a length field: TEM, the restart markers, start and end of image. (A walk that gave them one
# jumped ~62 KB at a time over scans libjpeg reads every one of.)
PARAMETERLESS = {0x01, 0xD8, 0xD9, *range(0xD0, 0xD8)}


def jpeg_scans(data: bytes) -> int:
    """The number of scans (SOS markers) in JPEG-family bytes, counted from the marker structure without decoding —
    over every frame of an MPO (frames follow one another, each SOI … EOI)."""
    data = bytes(data) if not isinstance(data, bytes) else data
    i, n, scans = 2, len(data), 0
    while i + 2 <= n:
        if data[i] != 0xFF:
            i = data.find(b"\xff", i)  # entropy-coded data between markers: jump to the next 0xFF
            if i < 0:
                break
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x00 or marker in PARAMETERLESS:  # a stuffed byte, or a marker with nothing after it
            i += 2
            continue
        if i + 4 > n:
            break
        if marker == 0xDA:
            scans += 1
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return scans


def _open(fp, name: str) -> Image.Image:
    try:
        img = Image.open(fp, formats=FORMATS)
        if img.width * img.height > MAX_PIXELS:
            raise ImageTooLarge(f"{name}: {img.width}×{img.height} is larger than {MAX_PIXELS:,} pixels")
        if img.format in ("JPEG", "MPO") and isinstance(fp, io.BytesIO) and jpeg_scans(fp.getvalue()) > MAX_JPEG_SCANS:
            raise InvalidImage(f"{name} is a JPEG of more than {MAX_JPEG_SCANS} scans: re-save it as an ordinary JPEG")
        img.load()
        return img
    except InvalidImage:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name} decodes to more than {MAX_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, TypeError):
        raise InvalidImage(f"{name} is not a readable image ({READABLE})") from None


def _from_pil(img: Image.Image, max_pixels: int) -> np.ndarray:
    if img.width * img.height > max_pixels:
        raise ImageTooLarge(f"image of {img.width}×{img.height} is larger than {max_pixels:,} pixels")
    if img.width < 8 or img.height < 8:
        raise InvalidImage(f"image of {img.width}×{img.height} is too small to hold a face")
    if max(img.width, img.height) > MAX_ASPECT * min(img.width, img.height):
        raise InvalidImage(f"image of {img.width}×{img.height} is too elongated to be a photo of a face "
                           f"(at most {MAX_ASPECT}:1)")
    try:
        img = ImageOps.exif_transpose(img)  # phone photos are stored sideways with an EXIF rotation
    except Exception:  # noqa: BLE001 — a malformed EXIF block: the pixels are fine, use them as stored
        pass
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InvalidImage(f"expected an H×W×3 RGB array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """An image (PIL or H×W×3 uint8 array) as PNG bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes that facegen wrote → H×W×3 uint8 RGB."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))
