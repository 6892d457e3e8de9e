"""What every Ray worker that loads models does first (data stages, training workers, evaluators, replicas); the CLI
shares the quieting."""
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


def quiet_libraries() -> None:
    """Model-loading progress bars and deprecation chatter from every actor would drown Ray's own progress (and the
    CLI's one line of output). Warnings, diffusers/transformers logging below ERROR, and every progress bar off, in this process. Libraries
    not imported yet are silenced through the variables they read at import, never by importing them here: diffusers
    and transformers take ~10 s of CPU to import, and most actors (face alignment, scoring, the face encoder) never
    load either."""
    import os
    import sys
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for var, value in (("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TQDM_DISABLE", "1")):  # diffusers' loading bars read no variable of their own
        os.environ.setdefault(var, value)
    for name in ("diffusers", "transformers"):
        if name in sys.modules:
            library_logging = sys.modules[name].utils.logging
            library_logging.set_verbosity_error()
            library_logging.disable_progress_bar()
