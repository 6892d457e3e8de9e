"""Shared by the benchmarks: the machine in words, and one JSON record per run under out/bench/."""
import json
import os
import platform
import time
from pathlib import Path


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ×{torch.cuda.device_count()}, {os.cpu_count()} CPU cores"
    return f"CPU only: {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def record(name: str, result: dict) -> None:
    result = {"bench": name, "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M"), **result}
    out = Path(os.environ.get("FACEGEN_BENCH_OUT", "out/bench"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
