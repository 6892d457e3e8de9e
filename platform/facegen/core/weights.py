"""Resolving model references: a local diffusers directory, a hub id, or an offline builder.

Every base model goes through one path: `resolve_model(ref)` gives a local directory in the real diffusers layout,
then its family's loader (facegen.core.bases: `SD21.load`, `SDXL.load`, `FLUX.load`) runs diffusers' own
`from_pretrained` on it. "tiny:sd21" / "tiny:sdxl" (small random models, tiny.py) and
"random:sd21-base" / "random:sdxl-base" (random weights with the public models' exact configs, random_models.py)
are built once into the cache and then loaded exactly like downloaded weights.
"""
from __future__ import annotations

import re
from pathlib import Path

from facegen.core.errors import ModelNotFound
from facegen.core.pins import verify_sha256

TINY_PREFIX, RANDOM_PREFIX = "tiny:", "random:"
# Only what the pipelines need from a hub repo: no fp16 duplicates, no .bin/.ckpt copies.
HUB_PATTERNS = ["*.json", "*.txt", "*/*.json", "*/*.txt", "*/*.model", "*/diffusion_pytorch_model.safetensors",
                "*/model.safetensors", "*/*.safetensors.index.json", "*/diffusion_pytorch_model-*.safetensors",
                "*/model-*.safetensors"]  # the last two: FLUX's sharded transformer and T5


COMMIT = re.compile(r"[0-9a-f]{40}")


def resolve_model(ref: str, sha256: dict[str, str] | None = None) -> Path:
    """A model reference → a local directory. Checks optional sha256 pins (relative path → hex digest). A hub id may
    be pinned to a commit, `owner/name@<40-hex commit>`: the files of that commit only. Anything else after `@` (a
    branch, a tag, nothing) is refused, since it is no pin; a path that does not exist is an error, never a hub id."""
    if ref.startswith(TINY_PREFIX):
        from facegen.core.tiny import build_tiny

        path = build_tiny(ref[len(TINY_PREFIX):])
    elif ref.startswith(RANDOM_PREFIX):
        from facegen.core.random_models import build_random

        path = build_random(ref[len(RANDOM_PREFIX):])
    elif Path(ref).expanduser().is_dir():
        path = Path(ref).expanduser()
    elif ref.startswith(("/", ".", "~")) or ref.partition("@")[0].count("/") != 1 or _looks_local(ref):
        raise ModelNotFound(f"model directory '{ref}' does not exist (a hub id looks like owner/name[@commit])")
    else:
        repo_id, at, revision = ref.partition("@")
        if at and not COMMIT.fullmatch(revision):
            raise ModelNotFound(f"'{ref}': a pin is the full 40-character commit hash after @ (owner/name@<commit>), "
                                f"not '{revision}' (a branch or tag can move); leave @ out to take the hub's main")
        path = _from_hub(repo_id, revision or None)
    if sha256:
        verify_sha256(path, sha256)
    return path


def _looks_local(ref: str) -> bool:
    """`models/flux-dev` when ./models exists: a path someone meant, not the hub's user `models`."""
    return Path(ref.partition("@")[0].split("/")[0]).expanduser().is_dir()


def _from_hub(repo_id: str, revision: str | None = None) -> Path:
    """A hub repo's files, at `revision` (a commit hash pins them: what a mirror serves later cannot change them)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass  # not cached yet: try the network below
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))  # real weights
    except Exception as e:
        from huggingface_hub.errors import RepositoryNotFoundError

        if isinstance(e, RepositoryNotFoundError):  # the hub answered: no such repo (taken down, renamed, private)
            raise ModelNotFound(
                f"'{repo_id}' is gone from the Hugging Face hub (404): set the preset key that names it (e.g. --set "
                f"methods.<method>.base_model=OWNER/NAME or a local directory) to a copy of the same weights"
            ) from None
        raise ModelNotFound(
            f"cannot load '{repo_id}' from the Hugging Face hub ({type(e).__name__}). Without network, download it "
            f"elsewhere (`hf download {repo_id} --local-dir DIR`) and point the preset at the directory, e.g. "
            f"--set methods.<method>.base_model=DIR"
        ) from None
