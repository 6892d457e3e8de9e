"""The few plots the jobs write (loss curve, evaluation trade-off), drawn headless and returned as PNG bytes."""
from __future__ import annotations

import io


def new_axes(figsize: tuple[float, float]):
    """(figure, axes) from matplotlib's non-interactive backend: jobs run on machines with no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, dpi=100)


def png_bytes(fig) -> bytes:
    """The figure with a light grid, laid out, as PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    for ax in fig.axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
