"""Provenance of generated images: an invisible watermark (the `invisible-watermark` package diffusers' SDXL
pipeline uses, DWT-DCT, 48 bits) plus metadata (method, seed, model ids) as JSON: a PNG text chunk, or for JPEG and
WebP the EXIF ImageDescription (ASCII-escaped JSON).

The mark lives in the chroma channels, which 4:2:0 chroma subsampling erases: JPEG is therefore written with full
chroma (4:4:4) at quality ≥ 90 (measured on astronaut.png: 48/48 bits at 90, 42/48 at 85, chance at 80), and WebP —
whose lossy mode always subsamples chroma — losslessly (`quality` is then the compression effort).

The DWT-DCT watermark needs at least 256×256 pixels, so the service never draws smaller images.
"""
from __future__ import annotations

import io
import json

import numpy as np
import PIL.Image
import PIL.PngImagePlugin

# facegen's 48-bit mark (distinct from diffusers' SDXL message).
MESSAGE = 0xFACE6E2026A1
BITS = [int(b) for b in format(MESSAGE, "048b")]
MIN_SIDE = 256
METADATA_KEY = "facegen"
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}  # request name → Pillow format
EXIF_DESCRIPTION = 0x010E


def embed(image: PIL.Image.Image) -> PIL.Image.Image:
    from imwatermark import WatermarkEncoder

    if min(image.size) < MIN_SIDE:
        raise ValueError(f"the invisible watermark needs at least {MIN_SIDE}×{MIN_SIDE} pixels, got {image.size}")
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", BITS)
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
    marked = encoder.encode(bgr, "dwtDct")
    return PIL.Image.fromarray(np.ascontiguousarray(marked[..., ::-1]))


def detect(image: PIL.Image.Image) -> float:
    """Share of the 48 bits that match facegen's mark (≈0.5 for an unmarked image, 1.0 for a marked one)."""
    from imwatermark import WatermarkDecoder

    if min(image.size) < MIN_SIDE:
        return 0.0
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
    got = WatermarkDecoder("bits", len(BITS)).decode(bgr, "dwtDct")
    return float(np.mean([int(a) == b for a, b in zip(got, BITS)]))


def encode_with_provenance(image: PIL.Image.Image | np.ndarray, info: dict, fmt: str = "png", quality: int = 95) -> bytes:
    """The watermarked image in `fmt` (png | jpeg | webp; `quality` for the lossy two) with `info` as metadata."""
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image)
    text = json.dumps({METADATA_KEY: info}, sort_keys=True)  # ASCII: EXIF descriptions are ASCII
    buf = io.BytesIO()
    marked = embed(image)
    if fmt == "png":
        meta = PIL.PngImagePlugin.PngInfo()
        meta.add_text(METADATA_KEY, json.dumps(info, sort_keys=True))
        marked.save(buf, format="PNG", pnginfo=meta)
    elif fmt in FORMATS:
        exif = PIL.Image.Exif()
        exif[EXIF_DESCRIPTION] = text
        lossy = {"subsampling": 0} if fmt == "jpeg" else {"lossless": True}
        marked.save(buf, format=FORMATS[fmt], quality=quality, exif=exif, **lossy)
    else:
        raise ValueError(f"unknown image format {fmt!r}: use one of {', '.join(FORMATS)}")
    return buf.getvalue()


def metadata(img: PIL.Image.Image) -> dict | None:
    """The provenance JSON of an opened image, whichever format carries it."""
    if METADATA_KEY in img.info:
        return json.loads(img.info[METADATA_KEY])
    description = img.getexif().get(EXIF_DESCRIPTION)
    if description:
        try:
            return json.loads(description).get(METADATA_KEY)
        except (ValueError, AttributeError):
            return None
    return None


def inspect(path) -> dict:
    """What `python -m facegen watermark FILE` prints."""
    with PIL.Image.open(path) as img:
        img.load()
        meta = metadata(img)
        score = detect(img)
    return {"path": str(path), "format": img.format, "watermarked": score >= 0.9, "bit_agreement": round(score, 3),
            "metadata": meta}
