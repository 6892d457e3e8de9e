"""The Ray Train worker loop (one per worker): build the method's training task, wrap it with the strategy
(strategies.py), iterate this worker's data shard, step, log, checkpoint.

Checkpoints hold the trained weights and optimizer (the strategy's files), the step, the metrics history, and for
every rank its data position (epoch, batch within it) and random-generator state, so a restarted or resumed run
continues exactly where it stopped: with the deterministic split of train/data.py it draws the same batches, noise and
dropout as an uninterrupted run, and its metrics stay one continuous series. Ray Train merges the ranks' files into one
checkpoint directory.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time

import torch

STATE_FILE, HISTORY_FILE = "state.json", "history.jsonl"
RANK_STATE, RANK_RNG = "rank-{}.json", "rng-rank-{}.safetensors"  # one of each per rank


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    from safetensors.torch import load_file

    from facegen.cluster.train.strategies import STRATEGIES
    from facegen.cluster.workers import quiet_libraries
    from facegen.core.methods import get_method
    from facegen.core.methods.training_utils import set_rng_state

    os.environ.update(config.get("env", {}))  # before DeepSpeed is imported (TORCH_EXTENSIONS_DIR, DS_ACCELERATOR)
    quiet_libraries()
    preset = config["preset"]
    cfg = preset.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)
    task = get_method(config["method"]).load_task(preset, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    strategy = STRATEGIES[config["strategy"]](cfg, device)
    model = strategy.wrap(task)

    state, history = {"step": 0, "epoch": 0, "batch_in_epoch": 0}, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = json.loads(open(os.path.join(d, STATE_FILE)).read())
            history = [json.loads(line) for line in open(os.path.join(d, HISTORY_FILE))]
            strategy.load(d)
            own = os.path.join(d, RANK_STATE.format(rank))
            exact = state.get("world") == world and os.path.exists(own)
            if exact:  # this rank's own position and generators
                state = {**state, **json.loads(open(own).read())}
                set_rng_state(task, load_file(os.path.join(d, RANK_RNG.format(rank))))
        if rank == 0:
            note = "" if exact else " — saved with another number of workers: data order and noise start afresh"
            print(f"[train] resumed from step {state['step']} (epoch {state['epoch']}, batch {state['batch_in_epoch']})"
                  f"{note}", flush=True)
            history.append({"event": "resumed", "step": state["step"]})

    shard = ray.train.get_dataset_shard("train")
    step, epoch, skip = state["step"], state["epoch"], state["batch_in_epoch"]
    tick, samples = time.perf_counter(), 0
    while step < config["max_steps"]:
        position = 0
        for batch in shard.iter_batches(batch_size=cfg.batch_size, drop_last=True, batch_format="numpy",
                                        local_shuffle_buffer_size=cfg.shuffle_buffer, local_shuffle_seed=cfg.seed + epoch):
            position += 1
            if position <= skip:  # the data position of a resumed run: skip what this epoch already used
                continue
            batch = {k: v if k == "prompt" else torch.from_numpy(v) for k, v in batch.items()}
            loss, parts = model(batch)
            strategy.step(loss)
            step += 1
            samples += len(batch["prompt"])
            last = step == config["max_steps"]
            if step % cfg.log_every == 0 or last:
                mean_loss = _mean_over_workers(loss.detach().float(), world)
                if rank == 0:
                    elapsed = time.perf_counter() - tick
                    row = {"step": step, "loss": mean_loss, "lr": strategy.lr(),
                           "samples_per_s": round(samples * world / max(elapsed, 1e-9), 3), **parts}
                    history.append(row)
                    print(f"[train] step {step}/{config['max_steps']} loss {row['loss']:.4f} "
                          f"lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s", flush=True)
                    tick, samples = time.perf_counter(), 0
            if step % cfg.checkpoint_every == 0 or last:
                _save(strategy, task, rank, {"step": step, "world": world, "epoch": epoch, "batch_in_epoch": position},
                      history)
            if step >= config["max_steps"]:
                break
        skip = 0
        if position == 0:
            raise RuntimeError("a worker received no training batch: the dataset is smaller than "
                               "num_workers × train.batch_size")
        if step < config["max_steps"]:
            epoch += 1


def _mean_over_workers(value: torch.Tensor, world: int) -> float:
    """The loss averaged over every worker's batch (rank 0's alone would depend on which rows it drew)."""
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        value = value.to("cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(value)
        value = value / world
    return float(value)


def _save(strategy, task, rank: int, state: dict, history: list) -> None:
    import ray.train
    from safetensors.torch import save_file

    from facegen.core.methods.training_utils import rng_state

    with tempfile.TemporaryDirectory() as d:
        strategy.save(d, rank)
        with open(os.path.join(d, RANK_STATE.format(rank)), "w") as f:
            json.dump({"epoch": state["epoch"], "batch_in_epoch": state["batch_in_epoch"]}, f)
        save_file(rng_state(task), os.path.join(d, RANK_RNG.format(rank)))
        if rank == 0:
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump(state, f)
            with open(os.path.join(d, HISTORY_FILE), "w") as f:
                f.writelines(json.dumps(h) + "\n" for h in history)
        ray.train.report({"step": state["step"], "loss": next((h["loss"] for h in reversed(history) if "loss" in h), math.nan)},
                         checkpoint=ray.train.Checkpoint.from_directory(d))
