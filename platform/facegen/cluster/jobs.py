"""What every job entry point shares (jobs/*.py stay thin): the common flags, the output check, Ray start-up,
one-line errors for user mistakes, and manifest.json.

    python jobs/NAME.py --preset tiny|NAME|file.yaml --output URI [--set key=value ...] [--resume]
"""
from __future__ import annotations

import argparse
import dataclasses
import platform as _platform  # the standard library's (facegen's source root is never a package)
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

from facegen.cluster.data.storage import Storage
from facegen.cluster.workers import quiet_libraries
from facegen.core.config import Preset, load_preset
from facegen.core.errors import ConfigError, FacegenError


def job_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", default="tiny", help="tiny | a shipped preset (docs/models.md) | a .yaml file")
    p.add_argument("--output", required=True, help="a local directory or s3://bucket/prefix")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset key")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in the same --output")
    return p


def ensure_ray() -> None:
    """`ray.init()` with no address: a local Ray by default, the cluster under `ray job submit` (RAY_ADDRESS)."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True, logging_level="WARNING")


def versions() -> dict:
    import diffusers
    import ray
    import torch

    from facegen import __version__

    return {"facegen": __version__, "python": _platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "ray": ray.__version__}


def prepare_output(uri: str, resume: bool) -> Storage:
    """The output location; a non-empty one is only reused with --resume, so nothing is overwritten by mistake."""
    out = Storage.open(uri)
    out.prepare_output()
    if not resume and out.list(recursive=True):
        raise ConfigError(f"--output {uri} already holds a run: add --resume to continue it, or choose another --output")
    return out


def run_job(name: str, args: argparse.Namespace, body: Callable[[Preset, Storage, argparse.Namespace], dict]) -> int:
    """Load the preset, check the output, run `body` (which returns the manifest's counts and extras), and write
    manifest.json last. A FacegenError prints one line and exits 2; nothing half-written is left behind."""
    quiet_libraries()  # the job prints its own progress; model loads in this driver (export) stay silent
    start = time.perf_counter()
    try:
        preset = load_preset(args.preset, args.set)
        out = prepare_output(args.output, args.resume)
        result = body(preset, out, args) or {}
    except FacegenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run again with --resume to continue", file=sys.stderr)
        return 130
    manifest = {
        "job": name,
        "preset": preset.name,
        "overrides": list(args.set),
        "args": {k: v for k, v in vars(args).items() if k not in ("set",)},
        "versions": versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timings": {"total_s": round(time.perf_counter() - start, 2), **result.pop("timings", {})},
        "config": dataclasses.asdict(preset),
        **result,
    }
    out.write_json("manifest.json", manifest)
    print(f"{name}: done in {manifest['timings']['total_s']:.0f}s → {out.uri_of('manifest.json')}", flush=True)
    return 0
