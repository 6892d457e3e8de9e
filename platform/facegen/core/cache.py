"""Where facegen keeps what it builds or links once: tiny and random models, face model packs, DeepSpeed's builds."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """FACEGEN_CACHE, or ~/.cache/facegen."""
    path = Path(os.environ.get("FACEGEN_CACHE", "~/.cache/facegen")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_once(kind: str, name: str, build, marker: str = "model_index.json") -> Path:
    """<cache>/<kind>/<name>, built by `build(tmp_dir)` the first time (done once it holds `marker`): written under a
    temporary name and renamed, so concurrent Ray workers never see half a model (a process that loses the race
    keeps the identical winner's)."""
    import shutil
    import tempfile

    target = cache_dir() / kind / name
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: theirs is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
