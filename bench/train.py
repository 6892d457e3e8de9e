"""Training benchmark: samples/s of the M² (or FaceCLIP) training job on Ray Train vs the same task, loss and optimizer
in one plain process (ratio measured in one run, tiny preset by default), and on a GPU machine samples/s/GPU.

    python bench/train.py [--method dreamidentity|faceclip] [--steps 30] [--workers 1] [--data DIR]
    python bench/train.py --preset dreamidentity-sd21 --sd21-shapes    # on a GPU: M² (paper-sized) against random:sd21-base,
                                                                       # SD2.1-sized UNet/VAE/text encoder at 512²

Without --data a small dataset is built first with jobs/build_data.py's library code (tiny preset).
The paper's M² run is about 5.6 samples/s/GPU (60k iterations × batch 64 on 8 A100s in a day).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402
from facegen.cluster.data.storage import Storage  # noqa: E402
from facegen.core.config import load_preset  # noqa: E402


def build_dataset(out: str, identities: int) -> None:
    import ray
    from facegen.cluster.data.build import run_build
    from facegen.core.config.data import read_names

    preset = load_preset("tiny", ["data.max_prompts=2", "data.steps=2", "data.keep_fraction=1.0"])
    ray.init(logging_level="WARNING")
    run_build(preset, Storage.open(out), read_names(None), None, identities)
    ray.shutdown()


def plain_loop(method: str, preset, data: str, steps: int) -> float:
    """The task's loss and an AdamW step over the kept self-aug rows, in this process (no Ray, no DDP).
    Returns samples/s after the first step (model loading and the first step's warm-up excluded)."""
    from facegen.cluster.train.data import decode_batch
    from facegen.core.methods import get_method

    cfg = preset.train
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task = get_method(method).load_task(preset, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    params = [p for p in task.trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    table = pd.concat([pq.read_table(p).to_pandas() for p in Storage.open(data).list("selfaug", suffixes=(".parquet",))])
    table = table[table["kept"]].rename(columns={"edited_image": "target"})
    columns = ("source_face", "face_embedding", "prompt", "target")
    decoded = decode_batch({c: table[c].tolist() for c in columns}, cfg.resolution,
                           preset.method(method).encoder.vit.img_size, get_method(method).base_family.config.vae_scale_factor)
    rows = {k: np.asarray(v) for k, v in decoded.items()}
    n = len(rows["prompt"])
    start, samples = None, 0
    for step in range(steps + 1):
        idx = [(step * cfg.batch_size + i) % n for i in range(cfg.batch_size)]
        batch = {k: v[idx] if k == "prompt" else torch.from_numpy(v[idx]) for k, v in rows.items()}
        loss, _ = task(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step == 0:
            start = time.perf_counter()
        else:
            samples += cfg.batch_size
    return samples / (time.perf_counter() - start)


def ray_train(method: str, preset, data: str, steps: int, workers: int) -> float:
    """The real job (jobs/train_*.py's library call); samples/s from its metrics, first step excluded."""
    from facegen.cluster.jobs import ensure_ray
    from facegen.cluster.train.run import run_training

    ensure_ray()
    with tempfile.TemporaryDirectory() as tmp:
        run_training(method, preset, Storage.open(tmp), data, workers, "ddp", steps)
        history = [json.loads(line) for line in open(f"{tmp}/metrics.jsonl")]
    rows = [h for h in history if "samples_per_s" in h][1:]
    return float(np.mean([h["samples_per_s"] for h in rows]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="dreamidentity", choices=["dreamidentity", "faceclip"])  # the registry's
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data", default=None, help="a build_data output (default: build a small one)")
    p.add_argument("--identities", type=int, default=4)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--sd21-shapes", action="store_true",
                   help="M² against a random SD2.1-sized UNet/VAE/text encoder at 512² (a GPU speed figure)")
    args = p.parse_args()
    overrides = ["train.log_every=1", "train.checkpoint_every=1000000", *args.set]
    if args.sd21_shapes:
        overrides += ["methods.dreamidentity.base_model=random:sd21-base", "face.model=buffalo_s",
                      "train.resolution=512", "train.batch_size=8"]
    preset = load_preset(args.preset, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = f"{tmp}/data"
            build_dataset(data, args.identities)
        plain = plain_loop(args.method, preset, data, args.steps)
        ray_sps = ray_train(args.method, preset, data, args.steps, args.workers)
    gpus = torch.cuda.device_count()
    result = {"method": args.method, "preset": args.preset, "sd21_shapes": args.sd21_shapes, "steps": args.steps,
              "batch_size": preset.train.batch_size, "workers": args.workers,
              "ray_train_samples_per_s": round(ray_sps, 3), "plain_samples_per_s": round(plain, 3),
              "ratio_ray_over_plain": round(ray_sps / plain, 2)}
    if gpus:
        result["samples_per_s_per_gpu"] = round(ray_sps / max(1, args.workers), 3)
        result["paper_samples_per_s_per_gpu"] = 5.6
    record(f"train_{args.method}", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
