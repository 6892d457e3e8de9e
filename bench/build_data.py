"""Data-build benchmark: scored rows/s of the tiny self-aug build on Ray Data vs the same stages called one after
another in one plain process (ratio measured in one run), and on a GPU machine, images/s per GPU.

    python bench/build_data.py [--identities 16] [--preset tiny] [--set data.edit.pool_size=2 ...]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402
from facegen.cluster.data import stages  # noqa: E402
from facegen.cluster.data.build import run_build, write_shard  # noqa: E402
from facegen.cluster.data.storage import Storage  # noqa: E402
from facegen.core.config import load_preset  # noqa: E402
from facegen.core.config.data import shipped_list  # noqa: E402


def sequential(preset, names, out: str) -> float:
    """The same stages, same batch sizes, one process, no Ray: models load once, then batch after batch."""
    start = time.perf_counter()
    chain = [stages.GenerateSourceStage(preset), stages.AlignStage(preset), stages.EditStage(preset),
             stages.ScoreStage(preset)]
    b = preset.data.generate.batch_size
    for i in range(0, len(names), b):
        df = pd.DataFrame({"identity": names[i:i + b]})
        for stage in chain:
            df = stage(df)
        write_shard(df, out, "selfaug", frozenset(), False)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--identities", type=int, default=16)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    import ray
    import torch

    preset = load_preset(args.preset, args.set)
    names = shipped_list("celebrities.txt")[: args.identities]
    rows = len(names) * len(preset.data.prompts())
    gpus = torch.cuda.device_count()
    ray.init(num_gpus=gpus or None, logging_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_build(preset, Storage.open(f"{tmp}/ray"), names, None, None)
        t_ray = time.perf_counter() - t0
        ray.shutdown()
        t_seq = sequential(preset, names, f"{tmp}/seq")
    images = len(names) * (1 + len(preset.data.prompts()))  # sources + edits drawn
    result = {"preset": args.preset, "identities": len(names), "scored_rows": rows,
              "ray_rows_per_s": round(rows / t_ray, 3), "sequential_rows_per_s": round(rows / t_seq, 3),
              "ratio_ray_over_sequential": round(t_seq / t_ray, 2), "ray_s": round(t_ray, 1), "sequential_s": round(t_seq, 1)}
    if gpus:
        result["images_per_s_per_gpu"] = round(images / t_ray / gpus, 3)
    record("build_data", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
