"""`python -m facegen convert facet5-flux`: ByteDance's published FaceT5-FLUX → facegen's export.

In: `face_t5_encoder.pt` (the whole official `FaceT5FluxWrapper` state dict, no prefix) and `dit.pt` (a diffusers
`FluxTransformer2DModel` state dict), from the hub repo ByteDance/FaceCLIP (model/).
Out: DIR/config.json + DIR/model.safetensors (the encoder, in the checkpoint's dtype) + DIR/tokenizer{,_2}/ (the base
model's) and DIR/transformer/ (the DiT in the diffusers layout, sharded): what `--model DIR` and `facet5=DIR` load.

Both files are memory-mapped with `torch.load(weights_only=True)` (a file that needs pickle is refused), checked
strictly against the architecture the preset sizes (`methods.facet5.encoder`) and the base model's transformer config,
then streamed to disk tensor by tensor: a 24 GB dit.pt converts on a 24 GB machine. The output appears whole or not
at all.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from facegen.core.errors import FacegenError, ModelNotFound
from facegen.core.models.checkpoints import check_state, failures_in_one_line, read_checkpoint, snapshot, write_sharded
from facegen.core.models.export import write_export, write_sources

TRANSFORMER_WEIGHTS = "diffusion_pytorch_model"
DIT_KEY, ENCODER_KEY = "x_embedder.weight", "encoder_2.t5_encoder.embed_tokens.weight"  # one key only each file has


def _refuse_swapped(state: dict, own_key: str, other_key: str, what: str, other: str) -> None:
    if own_key not in state and other_key in state:
        raise ModelNotFound(f"{what} holds {other} (it has {other_key}): are --encoder and --dit swapped?")


def encoder_state(path, config, shown=None) -> dict[str, torch.Tensor]:
    name = shown or path  # what errors call the file: the user's, not its private copy
    from accelerate import init_empty_weights

    from facegen.core.methods.facet5.encoder import FaceT5FluxEncoder

    state = read_checkpoint(path, "the FaceT5 encoder checkpoint", shown=name)
    _refuse_swapped(state, ENCODER_KEY, DIT_KEY, f"--encoder {name}", "a FLUX transformer")
    with init_empty_weights():
        expected = {k: v.shape for k, v in FaceT5FluxEncoder(config).state_dict().items()}
    check_state(state, expected, f"the FaceT5 encoder checkpoint {name}",
                "the official architecture as methods.facet5.encoder sizes it")
    return state


def transformer_state(path, config_dir: Path, shown=None) -> dict[str, torch.Tensor]:
    """dit.pt checked against a FluxTransformer2DModel built without weights from the base model's config."""
    name = shown or path  # what errors call the file: the user's, not its private copy
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    state = read_checkpoint(path, "the DiT checkpoint", shown=name)
    _refuse_swapped(state, DIT_KEY, ENCODER_KEY, f"--dit {name}", "the FaceT5 encoder")
    with init_empty_weights():
        dit = FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(str(config_dir)))
    check_state(state, {k: v.shape for k, v in dit.state_dict().items()}, f"the DiT checkpoint {name}",
                f"the transformer of {config_dir.parent}")
    return state


def convert(encoder: str | os.PathLike, dit: str | os.PathLike | None, out: str | os.PathLike, preset,
            max_shard_bytes: int = 5 * 2**30) -> list[Path]:
    """Write the export to `out` (which must not exist yet); returns the files written."""
    from transformers import AutoTokenizer

    from facegen.core.weights import resolve_model

    section = preset.method("facet5")
    out = Path(out).expanduser()
    if out.exists():
        raise FacegenError(f"--out {out} already exists: choose a new directory (nothing is overwritten)")
    base = resolve_model(section.base_model, section.sha256)
    for sub in ("tokenizer", "tokenizer_2") + (("transformer",) if dit else ()):
        if not (base / sub).is_dir():
            raise ModelNotFound(f"{section.base_model} has no {sub}/: is it a FLUX.1 model directory?")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        # each input read once, into a private copy hashed as it is read; the hashes go to <out>/sources.json
        inputs = tmp / ".inputs"
        encoder_copy, encoder_sha = snapshot(encoder, inputs, "the FaceT5 encoder checkpoint")
        sources = {Path(encoder).name: encoder_sha}
        state = encoder_state(encoder_copy, section.encoder, shown=encoder)
        dit_state = None
        if dit:
            dit_copy, sources[Path(dit).name] = snapshot(dit, inputs, "the DiT checkpoint")
            dit_state = transformer_state(dit_copy, base / "transformer", shown=dit)
        with failures_in_one_line(out):
            for sub in ("tokenizer", "tokenizer_2"):  # the base model's: the official wrapper tokenizes with FLUX.1-dev's
                AutoTokenizer.from_pretrained(base / sub).save_pretrained(tmp / sub)
            write_export(tmp, state, section.encoder, "FaceT5FluxEncoder")
            if dit_state is not None:  # where the pipeline looks for an export's own DiT
                from facegen.core.methods.facet5.pipeline import TRANSFORMER

                dit_dir = tmp / TRANSFORMER.full_dir
                dit_dir.mkdir()
                shutil.copyfile(base / "transformer" / "config.json", dit_dir / "config.json")
                write_sharded(dit_dir, dit_state, TRANSFORMER_WEIGHTS, max_shard_bytes)
            del state, dit_state
            shutil.rmtree(inputs)
            write_sources(tmp, sources)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p for p in out.rglob("*") if p.is_file())
