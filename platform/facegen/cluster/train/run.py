"""The driver side of a training job: check inputs, start Ray Train's TorchTrainer, then export the model from the
final checkpoint and write metrics.jsonl + a loss-curve PNG.

Checkpoints live under <output>/checkpoints/ (Ray Train's storage). A run stopped for any reason continues with
`--resume`: Ray Train finds the run's checkpoint state there and every worker restarts from the latest checkpoint.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import torch

from facegen.cluster.data.storage import Storage
from facegen.cluster.train.loop import HISTORY_FILE, STATE_FILE, train_loop_per_worker
from facegen.cluster.train.strategies import STRATEGIES
from facegen.core.config import Preset
from facegen.core.errors import ConfigError
from facegen.core.methods import get_method

RUN_NAME = "run"


def _torch_extensions_cache() -> None:
    # Should DeepSpeed JIT-build an op (its CPU shared-memory all-reduce is skipped: strategies.py), keep the build
    # across runs and test sessions.
    from facegen.core.cache import cache_dir

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))


def run_training(method: str, preset: Preset, out: Storage, data_uri: str, num_workers: int, strategy: str,
                 max_steps: int | None) -> dict:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from facegen.cluster.jobs import ensure_ray
    from facegen.cluster.train.data import check_training_data, exact_split, training_dataset

    cfg = preset.train
    if max_steps is not None:
        cfg.max_steps = max_steps
    cfg.validate(strategy)
    entry = get_method(method)
    preset.method(method)  # the preset configures this method
    if num_workers < 1:
        raise ConfigError("--num-workers must be at least 1")
    info = check_training_data(data_uri)  # before any worker starts
    entry.check_training(preset, info["kept"] + info["ffhq_rows"])
    _torch_extensions_cache()
    ensure_ray()
    # Auto: GPUs when the cluster has one per worker and CUDA sees it there (set train.use_gpu=true where GPU nodes
    # autoscale from zero).
    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else (
        ray.cluster_resources().get("GPU", 0) >= num_workers and _cuda_on_gpu_nodes())
    env = {"TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"]}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    os.environ.update(env)
    dataset = training_dataset(data_uri, preset, method)
    trainer = TorchTrainer(
        train_loop_per_worker,
        # The workers' environment travels with their config: on a running cluster they were started before this
        # driver set it (DeepSpeed's accelerator and op cache must reach them).
        train_loop_config={"preset": preset, "method": method, "strategy": strategy, "max_steps": cfg.max_steps,
                           "env": env},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(name=RUN_NAME, storage_path=out.path("checkpoints"),  # a path inside storage_filesystem
                             storage_filesystem=out.fs if out.is_remote else None,
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
        datasets={"train": dataset},
        dataset_config=exact_split() if cfg.materialize else None,
    )
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise RuntimeError(f"training ended without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        state = json.loads(open(os.path.join(d, STATE_FILE)).read())
        history = [json.loads(line) for line in open(os.path.join(d, HISTORY_FILE))]
        export(method, preset, strategy, d, out)
    out.write_atomic("metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())
    out.write_atomic("loss.png", loss_curve_png(history, f"{method} ({strategy}, {num_workers} workers)"))
    steps = [h for h in history if "loss" in h]
    return {"counts": {"steps": state["step"], "workers": num_workers}, "use_gpu": use_gpu,
            "final_loss": steps[-1]["loss"] if steps else None, "first_loss": steps[0]["loss"] if steps else None,
            "resumed": sum(1 for h in history if h.get("event") == "resumed"),
            "timings": {"fit_s": round(seconds, 2)}, "model": out.uri_of("model")}


def _cuda_on_gpu_nodes() -> bool:
    """A Ray GPU resource can be declared where CUDA sees none (`ray start --num-gpus` on a CPU box, a test
    cluster): ask a GPU worker, so such a cluster trains on CPU with gloo rather than failing in NCCL set-up."""
    import ray

    @ray.remote(num_gpus=1, num_cpus=0)
    def probe() -> bool:
        return torch.cuda.is_available()

    try:
        return ray.get(probe.remote(), timeout=120)
    except ray.exceptions.GetTimeoutError:  # every GPU busy elsewhere: they are real; the trainer will wait too
        return True


def training_main(job: str, description: str, argv=None) -> int:
    """The command line every training job shares: the common job flags plus --method (the registry entries this
    job trains, e.g. train_m2: dreamidentity on SD 2.1 or SDXL), --data, --num-workers, --strategy, --max-steps."""
    from facegen.cluster.jobs import job_parser, run_job
    from facegen.core.methods import REGISTRY

    methods = [m.name for m in REGISTRY.values() if m.job == job]
    p = job_parser(description)
    p.add_argument("--method", default=methods[0], choices=methods,
                   help=f"the registry entry to train (default {methods[0]})")
    p.add_argument("--data", required=True, help="the --output of jobs/build_data.py (local or s3://)")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--strategy", default="ddp", choices=list(STRATEGIES))
    p.add_argument("--max-steps", type=int, default=None)
    args = p.parse_args(argv)
    return run_job(job, args, lambda preset, out, a: run_training(
        a.method, preset, out, a.data, a.num_workers, a.strategy, a.max_steps))


def export(method: str, preset: Preset, strategy: str, checkpoint_dir: str, out: Storage) -> None:
    """<output>/model/: the encoder via save_pretrained, loadable by the pipelines and `generate --model`."""
    task = get_method(method).load_task(preset, "cpu", load_base=False)
    state = STRATEGIES[strategy].consolidate(checkpoint_dir)
    with tempfile.TemporaryDirectory() as tmp:
        task.export(state, tmp)
        out.write_tree("model", tmp)  # whole or not at all: never a new config.json beside old weights


def loss_curve_png(history: list[dict], title: str) -> bytes:
    from facegen.cluster.plots import new_axes, png_bytes

    rows = [h for h in history if "loss" in h]
    fig, ax = new_axes((6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    for h in history:
        if h.get("event") == "resumed":
            ax.axvline(h["step"], color="grey", ls="--", lw=0.8)
    ax.set(xlabel="step", ylabel="loss", title=title)
    return png_bytes(fig)
