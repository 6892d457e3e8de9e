"""Resolving model references: a local diffusers directory, a hub id, or an offline builder.

Every base model goes through one path: `resolve_model(ref)` gives a local directory in the real diffusers layout,
then its family's loader (facegen.core.bases: `SD21.load`, `SDXL.load`, `FLUX.load`) runs diffusers' own
`from_pretrained` on it. "tiny:sd21" / "tiny:sdxl" (small random models, tiny.py) and
"random:sd21-base" / "random:sdxl-base" (random weights with the public models' exact configs, random_models.py)
are built once into the cache and then loaded exactly like downloaded weights.
"""
from __future__ import annotations

from pathlib import Path

from facegen.core.errors import ModelNotFound
from facegen.core.pins import verify_sha256

TINY_PREFIX, RANDOM_PREFIX = "tiny:", "random:"
# Only what the pipelines need from a hub repo: no fp16 duplicates, no .bin/.ckpt copies.
HUB_PATTERNS = ["*.json", "*.txt", "*/*.json", "*/*.txt", "*/*.model", "*/diffusion_pytorch_model.safetensors",
                "*/model.safetensors", "*/*.safetensors.index.json", "*/diffusion_pytorch_model-*.safetensors",
                "*/model-*.safetensors"]  # the last two: FLUX's sharded transformer and T5


def resolve_model(ref: str, sha256: dict[str, str] | None = None) -> Path:
    """A model reference → a local directory. Checks optional sha256 pins (relative path → hex digest). A hub id may
    name a revision, `owner/name@<commit>`: the files of that commit only."""
    if ref.startswith(TINY_PREFIX):
        from facegen.core.tiny import build_tiny

        path = build_tiny(ref[len(TINY_PREFIX):])
    elif ref.startswith(RANDOM_PREFIX):
        from facegen.core.random_models import build_random

        path = build_random(ref[len(RANDOM_PREFIX):])
    elif Path(ref).expanduser().is_dir():
        path = Path(ref).expanduser()
    elif ref.startswith(("/", ".", "~")) or ref.partition("@")[0].count("/") != 1:
        raise ModelNotFound(f"model directory '{ref}' does not exist (a hub id looks like owner/name[@revision])")
    else:
        repo_id, _, revision = ref.partition("@")
        path = _from_hub(repo_id, revision or None)
    if sha256:
        verify_sha256(path, sha256)
    return path


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
