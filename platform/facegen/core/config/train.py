"""Typed training configuration (the preset's `train:` section), shared by every method's training job; what only
one method trains with lives in its own section (methods.<name>.train)."""
from __future__ import annotations

from dataclasses import dataclass

from facegen.core.errors import ConfigError

STRATEGIES = ("ddp", "deepspeed")
OFFLOADS = ("none", "optimizer", "all")


@dataclass
class TrainConfig:
    lr: float = 5e-5  # DreamIdentity's
    weight_decay: float = 0.0
    batch_size: int = 8  # per worker (the paper: 64 over 8 GPUs)
    max_steps: int = 60_000
    warmup_steps: int = 0
    grad_clip: float = 1.0
    seed: int = 0
    ffhq_ratio: float = 0.5  # share of FFHQ reconstruction rows in the mix (the rest: kept self-aug edits)
    resolution: int = 512  # target images are resized to this square; cached latents are used when they match
    shuffle_buffer: int = 256  # rows, per worker (a local shuffle: no global shuffle of the image bytes)
    checkpoint_every: int = 1000  # steps
    keep_checkpoints: int = 2
    log_every: int = 10
    materialize: bool = False  # decode the whole dataset once before training (small sets: no re-read per epoch)
    fixed_noise: bool = False  # same noise and timesteps every step: a diagnostic for overfitting a fixed batch
    max_failures: int = 3  # a killed worker restarts the group from the last checkpoint this many times
    deepspeed_stage: int = 2  # ZeRO stage for --strategy deepspeed (2 or 3)
    # ZeRO-Offload on a GPU cluster: none; optimizer (Adam states in CPU RAM); all (with stage 3, the parameters too:
    # a 12 B DiT fine-tunes on GPUs smaller than its weights, slower). DeepSpeed's CPU Adam is built on first use.
    deepspeed_offload: str = "none"
    use_gpu: bool | None = None  # None = when the cluster has GPUs
    cpus_per_worker: float = 1.0

    def validate(self, strategy: str) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"--strategy {strategy}: use one of {', '.join(STRATEGIES)}")
        if self.deepspeed_stage not in (2, 3):
            raise ConfigError("train.deepspeed_stage must be 2 or 3")
        if self.deepspeed_offload not in OFFLOADS:
            raise ConfigError(f"train.deepspeed_offload '{self.deepspeed_offload}': use one of {', '.join(OFFLOADS)}")
        if self.deepspeed_offload == "all" and self.deepspeed_stage != 3:
            raise ConfigError("train.deepspeed_offload=all offloads parameters, which needs train.deepspeed_stage=3")
        if not 0 <= self.ffhq_ratio <= 1:
            raise ConfigError("train.ffhq_ratio must be between 0 and 1")
        for name in ("batch_size", "max_steps", "checkpoint_every", "log_every", "resolution"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive")
        if self.resolution % 8:
            raise ConfigError("train.resolution must be a multiple of 8")
