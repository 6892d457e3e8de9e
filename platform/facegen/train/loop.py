"""The Ray Train worker loop (one per worker) and the strategies: DDP via Ray Train's `prepare_model`, or a
DeepSpeed engine (ZeRO-2/3 configs shipped in facegen/train/deepspeed/).

Checkpoints hold the trainable weights, optimizer, step, data position (epoch, batch within it) and the metrics
history, so a restarted or resumed run continues — and its metrics stay one continuous series. DDP: rank 0 writes
model.pt; DeepSpeed: every rank writes its ZeRO shard (engine.save_checkpoint) and Ray Train merges the ranks'
files into one checkpoint directory.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from importlib import resources

import torch

STATE_FILE, HISTORY_FILE, MODEL_FILE, DS_TAG = "state.json", "history.jsonl", "model.pt", "zero"


def deepspeed_config(stage: int, batch_size: int, lr: float, weight_decay: float, grad_clip: float, on_gpu: bool) -> dict:
    cfg = json.loads(resources.files("facegen.train").joinpath("deepspeed", f"zero{stage}.json").read_text())
    cfg["train_micro_batch_size_per_gpu"] = batch_size
    cfg["gradient_clipping"] = grad_clip
    cfg["optimizer"]["params"].update(lr=lr, weight_decay=weight_decay)
    cfg["bf16"] = {"enabled": on_gpu}  # fp32 on CPU
    if not on_gpu:
        cfg["optimizer"]["params"]["torch_adam"] = True  # no fused-Adam CUDA build on a CPU box
    return cfg


def _lr_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from facegen.data.stages import quiet_worker
    from facegen.train.tasks import TASKS

    quiet_worker()
    preset, strategy = config["preset"], config["strategy"]
    cfg = preset.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    torch.manual_seed(cfg.seed + rank)
    task = TASKS[config["method"]](preset, device, torch.bfloat16 if on_gpu else torch.float32)
    params = [p for p in task.trainable.parameters() if p.requires_grad]

    if strategy == "deepspeed":
        import deepspeed

        ds_cfg = deepspeed_config(cfg.deepspeed_stage, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.grad_clip, on_gpu)
        # The engine steps (and checkpoints) the scheduler itself; it builds it around its own inner optimizer.
        model, optimizer, _, scheduler = deepspeed.initialize(
            model=task.trainable.to(device), model_parameters=params, config=ds_cfg, dist_init_required=False,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps)))
    else:
        model = ray.train.torch.prepare_model(task.trainable, parallel_strategy_kwargs={"find_unused_parameters": True})
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps))

    state, history = {"step": 0, "epoch": 0, "batch_in_epoch": 0}, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = json.loads(open(os.path.join(d, STATE_FILE)).read())
            history = [json.loads(line) for line in open(os.path.join(d, HISTORY_FILE))]
            if strategy == "deepspeed":
                model.load_checkpoint(d, tag=DS_TAG)
            else:
                saved = torch.load(os.path.join(d, MODEL_FILE), map_location=device, weights_only=False)
                _unwrap(model).load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
        if rank == 0:
            print(f"[train] resumed from step {state['step']} (epoch {state['epoch']}, batch {state['batch_in_epoch']})",
                  flush=True)
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
            loss, parts = task.loss(model, batch)
            if strategy == "deepspeed":
                model.backward(loss)
                model.step()
            else:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
            step += 1
            samples += len(batch["prompt"])
            if step % cfg.log_every == 0 or step == config["max_steps"]:
                mean_loss = _mean_over_workers(loss.detach().float(), world)
            if rank == 0 and (step % cfg.log_every == 0 or step == config["max_steps"]):
                elapsed = time.perf_counter() - tick
                row = {"step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                       "samples_per_s": round(samples * world / max(elapsed, 1e-9), 3), **parts}
                history.append(row)
                print(f"[train] step {step}/{config['max_steps']} loss {row['loss']:.4f} "
                      f"lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s", flush=True)
                tick, samples = time.perf_counter(), 0
            if step % cfg.checkpoint_every == 0 or step == config["max_steps"]:
                _save(model, optimizer, scheduler, strategy, rank,
                      {"step": step, "epoch": epoch, "batch_in_epoch": position}, history)
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


def _unwrap(model):
    return getattr(model, "module", model)


def _save(model, optimizer, scheduler, strategy: str, rank: int, state: dict, history: list) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        if strategy == "deepspeed":
            model.save_checkpoint(d, tag=DS_TAG)  # every rank writes its own shard
        elif rank == 0:
            torch.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict()}, os.path.join(d, MODEL_FILE))
        if rank == 0:
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump(state, f)
            with open(os.path.join(d, HISTORY_FILE), "w") as f:
                f.writelines(json.dumps(h) + "\n" for h in history)
        has_files = bool(os.listdir(d))
        ray.train.report({"step": state["step"], "loss": next((h["loss"] for h in reversed(history) if "loss" in h), math.nan)},
                         checkpoint=ray.train.Checkpoint.from_directory(d) if has_files else None)
