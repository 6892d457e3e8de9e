"""sha256 pins: every file a loader reads can be pinned (base models, exported encoders, face packs, ViT weights), so
a swapped file in a shared cache or bucket is refused before it is used."""
from __future__ import annotations

import hashlib
from pathlib import Path

from facegen.core.errors import ModelNotFound


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(root: str | Path, pins: dict[str, str], what: str = "") -> None:
    """Each pinned file (relative to `root`) exists and has its hex digest; a ModelNotFound names the first that
    does not."""
    root = Path(root)
    for rel, expected in (pins or {}).items():
        f = root / rel
        if not f.is_file():
            raise ModelNotFound(f"pinned file {rel} is missing from {what or root}")
        actual = sha256_of(f)
        if actual != expected.lower():
            raise ModelNotFound(f"{f}: sha256 {actual[:16]}… does not match the pin {expected[:16]}…"
                                + (f" ({what})" if what else ""))


def verify_file(path: str | Path, expected: str | None, what: str) -> None:
    if expected:
        verify_sha256(Path(path).parent, {Path(path).name: expected}, what)
