"""What every Ray worker that loads models does first (data stages, training workers, evaluators, replicas); the CLI and
the job drivers share the quieting."""
from __future__ import annotations


def actor_device(dtype: str = "auto", key: str = "dtype"):
    """(device, dtype): the GPU Ray gave this actor if it gave one and torch can use it, else the CPU; the dtype is
    the method's `dtype` setting resolved for that device (facegen.core.devices: auto = fp16 on CUDA, fp32 on a CPU)."""
    import ray
    import torch

    from facegen.core import devices

    on_gpu = torch.cuda.is_available() and ray.is_initialized() and ray.get_gpu_ids()
    place = devices.resolve(dtype, torch.device("cuda" if on_gpu else "cpu"), key=key)
    return place.device, place.dtype


# The logging modules of the libraries whose chatter quiet_libraries turns off.
LIBRARY_LOGGING = ("diffusers.utils.logging", "transformers.utils.logging")


def quiet_libraries() -> None:
    """Model-loading progress bars and deprecation chatter from every actor would drown Ray's own progress (and the
    CLI's one line of output): warnings off, and diffusers/transformers logging at ERROR with their progress bars off
    (hub downloads' too), in this process.

    A library not imported yet is silenced when it is imported (an import hook), never by importing it here:
    diffusers takes ~5 s of CPU to import, and most actors (face alignment, FFHQ ingest, scoring) never load it.
    Environment variables cannot do it: diffusers' bars read none, and tqdm reads its own only when tqdm is imported,
    which Ray has done before any of our code runs."""
    import os
    import sys
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in LIBRARY_LOGGING:
        if name in sys.modules:
            _silence(sys.modules[name])
    if not any(isinstance(finder, _SilenceWhenImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SilenceWhenImported())


def _silence(library_logging) -> None:
    library_logging.set_verbosity_error()
    library_logging.disable_progress_bar()


class _SilenceWhenImported:
    """A meta-path finder that finds nothing itself: for the logging modules in LIBRARY_LOGGING it returns the spec
    the standard path finder would, with the loader's exec_module extended to silence the module once it has run."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in LIBRARY_LOGGING:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return None
        run_module = spec.loader.exec_module  # a loader instance made for this one spec

        def exec_module(module):
            run_module(module)
            _silence(module)

        spec.loader.exec_module = exec_module
        return spec
