"""Seeds that depend only on content, so a row or a request gets the same noise in any process or order."""
from __future__ import annotations

import hashlib


def stable_seed(*parts) -> int:
    """A 31-bit seed from its parts (not from Python's per-process hash salt)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
