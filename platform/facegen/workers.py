"""What every Ray worker that loads models does first (data stages, training workers, evaluators, replicas)."""
from __future__ import annotations


def actor_device(dtype: str = "auto", key: str = "dtype"):
    """(device, dtype): the GPU Ray gave this actor if it gave one and torch can use it, else the CPU; the dtype is
    the method's `dtype` setting resolved for that device (facegen.devices: auto = fp16 on CUDA, fp32 on a CPU)."""
    import ray
    import torch

    from facegen import devices

    on_gpu = torch.cuda.is_available() and ray.is_initialized() and ray.get_gpu_ids()
    place = devices.resolve(dtype, torch.device("cuda" if on_gpu else "cpu"), key=key)
    return place.device, place.dtype


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
