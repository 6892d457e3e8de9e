"""What the methods' training tasks share: the contract a task keeps with the trainer (facegen/cluster/train/),
`IdentityTask`, and the ε/v denoising objective, target latents and frozen parts:

    task = method.load_task(preset, device)     # Task(method, its section, train section, device, …): an nn.Module
    loss, metrics = task(batch)                 # DDP / DeepSpeed wrap the whole task
    task.trainable                              # the module whose weights train, checkpoint and export
    task.export(state_dict, directory)          # trained weights (trainable's keys) → the method's export format

Randomness a task draws comes from torch's global generators or from `torch.Generator` attributes it owns; both are
saved in every rank's checkpoint (`rng_state` / `set_rng_state`), so a resumed run draws what an uninterrupted one would.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facegen.core.seeds import stable_seed


class IdentityTask(nn.Module):
    """A method's training task: built from its registry entry (`method`: which base it trains on), its own preset
    section and the train section — never the whole preset; `clip` is the preset's CLIP scorer config, for a method
    whose loss reads images through CLIP. `load_base=False` builds what an export needs only (no VAE, no frozen
    denoiser)."""

    def __init__(self, method, section, train, device: torch.device | str = "cpu",
                 frozen_dtype: torch.dtype = torch.float32, load_base: bool = True, clip=None):
        super().__init__()
        self.method, self.section, self.cfg, self.device = method, section, train, torch.device(device)
        self.base = method.base_family

    @staticmethod
    def check_config(section, rows: int) -> None:
        """Before any worker starts: refuse what this section cannot train on `rows` rows (nothing by default)."""

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """One batch → (loss, metrics)."""
        raise NotImplementedError

    def export(self, state_dict: dict, directory) -> None:
        """Trained weights (`trainable`'s keys) → the method's export format in `directory`."""
        raise NotImplementedError


def _noise_target(scheduler, latents, noise, timesteps):
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def row_seeds(batch: dict) -> list[int]:
    """One seed per row from its content, so a row gets the same noise whichever worker and batch it lands in."""
    return [stable_seed(p, round(float(f.double().sum()), 3)) for p, f in zip(batch["prompt"], batch["face"])]


def diffusion_loss(unet, scheduler, latents, seeds: list[int] | None = None, **unet_kwargs) -> torch.Tensor:
    """The denoising objective: noise a clean latent at a random timestep, predict the noise (or v), MSE.
    `seeds` (one per row) fixes each row's noise and timestep: the overfitting diagnostic (train.fixed_noise)."""
    b, n = latents.shape[0], scheduler.config.num_train_timesteps
    if seeds is None:
        noise = torch.randn(latents.shape, dtype=torch.float32)
        t = torch.randint(0, n, (b,))
    else:
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in gens])
        t = torch.cat([torch.randint(0, n, (1,), generator=g) for g in gens])
    noise, t = noise.to(latents.device, latents.dtype), t.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy.to(unet.dtype), t, **unet_kwargs).sample
    return F.mse_loss(pred.float(), _noise_target(scheduler, latents, noise, t).float())


def target_latents(vae, batch: dict, device, dtype, use_mean: bool) -> torch.Tensor:
    """The batch's cached latents, or the frozen VAE's latents of its target images (the mean when the noise is
    fixed, so an overfitting run sees one fixed target)."""
    if "latents" in batch:
        return batch["latents"].to(device, dtype)
    with torch.no_grad():
        dist = vae.encode(batch["target"].to(device, vae.dtype)).latent_dist
        return (dist.mean if use_mean else dist.sample()) * vae.config.scaling_factor


def frozen(module: nn.Module, device, dtype) -> nn.Module:
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def train_scheduler(scheduler):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config)


def trained_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (what a checkpoint must hold; frozen parts are rebuilt identically)."""
    return {k: v.detach() for k, v in module.named_parameters() if v.requires_grad}


def load_trained_weights(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's trained weights; every weight it lacks must be a frozen one."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    grads = {k for k, v in module.named_parameters() if v.requires_grad}
    if unexpected or grads & set(missing):
        raise ValueError(f"checkpoint does not fit the model: unexpected {unexpected[:3]}, "
                         f"missing trained {sorted(grads & set(missing))[:3]}")


def rng_state(task: nn.Module) -> dict[str, torch.Tensor]:
    """Every random generator a training step draws from: torch's CPU and (when in use) CUDA generators, and each
    `torch.Generator` the task owns (e.g. FaceCLIP's conditioning dropout), as uint8 tensors (safetensors-storable)."""
    state = {"torch.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch.cuda"] = torch.cuda.get_rng_state()
    for name, value in vars(task).items():
        if isinstance(value, torch.Generator):
            state[f"task.{name}"] = value.get_state()
    return state


def set_rng_state(task: nn.Module, state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch.cpu"])
    if "torch.cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["torch.cuda"])
    for name, value in vars(task).items():
        if isinstance(value, torch.Generator) and f"task.{name}" in state:
            value.set_state(state[f"task.{name}"])
