"""What any caller may ask of a pipeline's sampling: the CLI, the Python API and the HTTP service accept exactly these
values, so a value one refuses the others refuse too (the service caps further per method: methods.base.ServiceCaps).
Plain data and a check: imports no torch."""
from __future__ import annotations

SAMPLING_BOUNDS = {"steps": (1, 1000), "guidance_scale": (0.0, 50.0), "width": (8, 4096), "height": (8, 4096),
                   "num_images": (1, 16)}
SIZE_MULTIPLE = 8  # latents are 1/8 of the image a side


def check_sampling(labels: dict[str, str] | None = None, size_multiple: int = SIZE_MULTIPLE, **values) -> None:
    """Each given value (None = the default) within SAMPLING_BOUNDS, sizes multiples of `size_multiple` (a method
    may need more than SIZE_MULTIPLE: FLUX packs 2×2 latents, 16 px); a BadSampling names the value as the caller
    wrote it (`labels`, e.g. {"steps": "--steps"})."""
    from facegen.core.errors import BadSampling

    for key, value in values.items():
        if value is None:
            continue
        low, high = SAMPLING_BOUNDS[key]
        label = (labels or {}).get(key, key)
        whole = key != "guidance_scale"
        number = isinstance(value, int) if whole else isinstance(value, (int, float))
        if isinstance(value, bool) or not number or not low <= value <= high:
            raise BadSampling(f"{label} must be a {'whole ' if whole else ''}number from {low:g} to {high:g}, got {value!r}")
        if key in ("width", "height") and value % size_multiple:
            raise BadSampling(f"{label} must be a multiple of {size_multiple}, got {value}")


