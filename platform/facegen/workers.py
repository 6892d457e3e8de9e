"""What every Ray worker that loads models does first (data stages, training workers, evaluators, replicas)."""
from __future__ import annotations


def actor_device():
    """(device, dtype): the GPU Ray gave this actor, if it gave one and torch can use it (fp16); else the CPU (fp32)."""
    import ray
    import torch

    if torch.cuda.is_available() and ray.is_initialized() and ray.get_gpu_ids():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def quiet_worker() -> None:
    """Model-loading progress bars and deprecation chatter from every actor would drown Ray's own progress."""
    import warnings

    import diffusers
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
