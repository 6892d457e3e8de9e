"""`python -m facegen convert faceclip-official`: ByteDance's published FaceCLIP-SDXL checkpoint → facegen's export.

In: `face_clip_encoder.pt` (a torch.save'd state dict, keys "model.face_clip_l.*" / "model.face_clip_g.*") and
`unet.pt` (a full SDXL UNet state dict with diffusers' key names), from the hub repo ByteDance/FaceCLIP (model/).
Out: DIR/config.json + DIR/model.safetensors (the encoder, in the checkpoint's own 16-bit dtype) and DIR/unet/ (the
UNet in the diffusers layout): what `--model DIR`, the jobs and the service (`faceclip=DIR`) load.

Both files are read with `torch.load(weights_only=True)`: a file that needs pickle to load is refused. Both are
checked strictly against the architecture the preset sizes (`methods.faceclip.encoder.official`) and the base
model's UNet config before anything is written; the output appears whole or not at all.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from facegen.core.errors import FacegenError, ModelNotFound
from facegen.core.methods.faceclip.config import OfficialFaceCLIPConfig
from facegen.core.models.checkpoints import check_state, failures_in_one_line, read_checkpoint, snapshot
from facegen.core.models.export import write_export, write_sources

PREFIX = "model."  # the official loader strips it from every key


def official_encoder_state(path, config: OfficialFaceCLIPConfig, shown=None) -> dict[str, torch.Tensor]:
    name = shown or path  # what errors call the file: the user's, not its private copy
    from facegen.core.methods.faceclip.official import OfficialFaceCLIPEncoder

    state = {k.removeprefix(PREFIX): v for k, v in read_checkpoint(path, "the FaceCLIP encoder checkpoint", shown=name).items()}
    with torch.device("meta"):
        expected = {k: v.shape for k, v in OfficialFaceCLIPEncoder(config).state_dict().items()}
    check_state(state, expected, f"the FaceCLIP encoder checkpoint {name}",
                "the official architecture as methods.faceclip.encoder.official sizes it")
    return state


def official_unet(path, base_model: str, sha256: dict[str, str], shown=None):
    """The fine-tuned SDXL UNet: built without weights from the base model's UNet config, then given the
    checkpoint's tensors (no 10 GB random initialisation, no second copy)."""
    name = shown or path  # what errors call the file: the user's, not its private copy
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from facegen.core.weights import resolve_model

    config_dir = resolve_model(base_model, sha256) / "unet"
    if not (config_dir / "config.json").is_file():
        raise ModelNotFound(f"{base_model} has no unet/config.json: is it an SDXL model directory?")
    state = read_checkpoint(path, "the UNet checkpoint", shown=name)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(config_dir)))
    check_state(state, {k: v.shape for k, v in unet.state_dict().items()}, f"the UNet checkpoint {name}",
                f"the UNet of {base_model}")
    unet.load_state_dict(state, strict=True, assign=True)
    return unet


def convert_official(encoder: str | os.PathLike, unet: str | os.PathLike | None, out: str | os.PathLike,
                     preset) -> list[Path]:
    """Write the export to `out` (which must not exist yet); returns the files written. Each input is read once,
    into a private copy hashed as it is read (`snapshot`); the hashes are recorded in <out>/sources.json."""
    section = preset.method("faceclip")
    out = Path(out).expanduser()
    if out.exists():
        raise FacegenError(f"--out {out} already exists: choose a new directory (nothing is overwritten)")
    config = section.encoder.official
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        inputs = tmp / ".inputs"
        encoder_copy, encoder_sha = snapshot(encoder, inputs, "the FaceCLIP encoder checkpoint")
        sources = {Path(encoder).name: encoder_sha}
        state = official_encoder_state(encoder_copy, config, shown=encoder)
        unet_model = None
        if unet:
            unet_copy, sources[Path(unet).name] = snapshot(unet, inputs, "the UNet checkpoint")
            unet_model = official_unet(unet_copy, section.base_model, section.sha256, shown=unet)
        with failures_in_one_line(out):
            write_export(tmp, state, config, "OfficialFaceCLIPEncoder")
            if unet_model is not None:  # where the pipeline looks for an export's own UNet
                from facegen.core.methods.faceclip.pipeline import UNET

                unet_model.save_pretrained(tmp / UNET.full_dir)
            del state, unet_model
            shutil.rmtree(inputs)
            write_sources(tmp, sources)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p for p in out.rglob("*") if p.is_file())
