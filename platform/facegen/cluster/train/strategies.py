"""How the trainable part of a task is wrapped, stepped, checkpointed and consolidated: one class per strategy, so
the worker loop (loop.py) has no `if strategy == ...` branches.

Both wrap the whole training task (an nn.Module whose forward returns the loss), so gradients of everything that
trains are synced whatever the task computes inside; checkpoints hold only what trains (frozen parts are rebuilt
identically from the preset), and load without pickle: weights as safetensors, optimizer state with
`torch.load(weights_only=True)`. DeepSpeed's own checkpoint files are read by DeepSpeed's loader, which unpickles:
a checkpoint directory is trusted input (see the README's "Security").
"""
from __future__ import annotations

import json
import os
from importlib import resources

import torch

from facegen.core.methods.training_utils import load_trained_weights, trained_weights

WEIGHTS_FILE, OPTIMIZER_FILE, DS_TAG = "model.safetensors", "optimizer.pt", "zero"


def _lr_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _params(task) -> list:
    return [p for p in task.trainable.parameters() if p.requires_grad]


class DDPStrategy:
    """Ray Train's `prepare_model` (DDP on several workers), AdamW, a warm-up schedule; rank 0 checkpoints."""

    name = "ddp"

    def __init__(self, cfg, device: torch.device):
        self.cfg, self.device = cfg, device

    def wrap(self, task):
        import ray.train.torch

        self.task = task
        self.model = ray.train.torch.prepare_model(task, parallel_strategy_kwargs={"find_unused_parameters": True})
        self.optimizer = torch.optim.AdamW(_params(task), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(self.cfg.warmup_steps))
        return self.model

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(_params(self.task), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: str, rank: int) -> None:
        if rank != 0:
            return
        from safetensors.torch import save_file

        save_file({k: v.contiguous().cpu() for k, v in trained_weights(self.task.trainable).items()},
                  os.path.join(directory, WEIGHTS_FILE))
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   os.path.join(directory, OPTIMIZER_FILE))

    def load(self, directory: str) -> None:
        from safetensors.torch import load_file

        load_trained_weights(self.task.trainable, load_file(os.path.join(directory, WEIGHTS_FILE), device=str(self.device)))
        saved = torch.load(os.path.join(directory, OPTIMIZER_FILE), map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])

    @staticmethod
    def consolidate(directory: str) -> dict[str, torch.Tensor]:
        """The trained weights of a checkpoint, fp32 on the CPU."""
        from safetensors.torch import load_file

        return {k: v.float() for k, v in load_file(os.path.join(directory, WEIGHTS_FILE)).items()}


def deepspeed_config(stage: int, batch_size: int, lr: float, weight_decay: float, grad_clip: float, on_gpu: bool,
                     offload: str = "none") -> dict:
    cfg = json.loads(resources.files("facegen.cluster.train").joinpath("deepspeed", f"zero{stage}.json").read_text())
    if on_gpu and offload != "none":  # ZeRO-Offload (train.deepspeed_offload); on a CPU everything is there already
        cfg["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if offload == "all":
            cfg["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg["train_micro_batch_size_per_gpu"] = batch_size
    cfg["gradient_clipping"] = grad_clip
    cfg["optimizer"]["params"].update(lr=lr, weight_decay=weight_decay)
    cfg["bf16"] = {"enabled": on_gpu}  # fp32 on CPU
    if not on_gpu:
        cfg["optimizer"]["params"]["torch_adam"] = True  # no fused-Adam CUDA build on a CPU box
    return cfg


SHARED_MEMORY_ALLREDUCE_OP = "deepspeed_shm_comm"


def skip_shared_memory_allreduce_build() -> None:
    """On the CPU accelerator, DeepSpeed's communication backend JIT-compiles its shared-memory all-reduce (C++ with
    OpenMP: ~70 s on 2 cores, again whenever the venv's path changes) when the engine starts. Only tensor-parallel
    inference (`inference_all_reduce`) calls it; ZeRO training reduces through the gloo process group either way.
    Marking the op incompatible in DeepSpeed's probe table (a module-level dict, read when the backend starts) skips
    the build and changes nothing the training computes."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHARED_MEMORY_ALLREDUCE_OP] = False


class DeepSpeedStrategy:
    """A DeepSpeed engine (ZeRO-2/3 configs shipped in facegen/cluster/train/deepspeed/); every rank writes its shard."""

    name = "deepspeed"

    def __init__(self, cfg, device: torch.device):
        self.cfg, self.device = cfg, device

    def wrap(self, task):
        import deepspeed

        c = self.cfg
        if self.device.type == "cpu":
            skip_shared_memory_allreduce_build()
        ds_cfg = deepspeed_config(c.deepspeed_stage, c.batch_size, c.lr, c.weight_decay, c.grad_clip,
                                  self.device.type == "cuda", c.deepspeed_offload)
        # The engine steps (and checkpoints) the scheduler itself; it builds it around its own inner optimizer.
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=task.to(self.device), model_parameters=_params(task), config=ds_cfg, dist_init_required=False,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(c.warmup_steps)))
        return self.engine

    def step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: str, rank: int) -> None:
        self.engine.save_checkpoint(directory, tag=DS_TAG, exclude_frozen_parameters=True)

    def load(self, directory: str) -> None:
        self.engine.load_checkpoint(directory, tag=DS_TAG, load_module_strict=False)

    @staticmethod
    def consolidate(directory: str) -> dict[str, torch.Tensor]:
        """ZeRO shards → the trained weights (keys of the task's `trainable`), fp32 on the CPU."""
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(directory, tag=DS_TAG, exclude_frozen_parameters=True)
        return {k[len("trainable."):]: v for k, v in state.items() if k.startswith("trainable.")}


STRATEGIES = {s.name: s for s in (DDPStrategy, DeepSpeedStrategy)}
