"""Where facegen keeps what it builds or links once: tiny and random models, face model packs, DeepSpeed's builds."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """FACEGEN_CACHE, or ~/.cache/facegen."""
    path = Path(os.environ.get("FACEGEN_CACHE", "~/.cache/facegen")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
