"""Provenance of generated images: an invisible watermark (the `invisible-watermark` package diffusers' SDXL
pipeline uses, DWT-DCT, 48 bits) plus PNG text metadata (method, seed, model ids).

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


def png_with_provenance(image: PIL.Image.Image, info: dict) -> bytes:
    """The watermarked image as PNG bytes with `info` as JSON in a text chunk."""
    meta = PIL.PngImagePlugin.PngInfo()
    meta.add_text(METADATA_KEY, json.dumps(info, sort_keys=True))
    buf = io.BytesIO()
    embed(image).save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def inspect(path) -> dict:
    """What `python -m facegen watermark FILE` prints."""
    with PIL.Image.open(path) as img:
        img.load()
        meta = img.info.get(METADATA_KEY)
        score = detect(img)
    return {"path": str(path), "watermarked": score >= 0.9, "bit_agreement": round(score, 3),
            "metadata": json.loads(meta) if meta else None}
