"""Figures: matplotlib without a display, written atomically (a killed run never leaves half a PNG)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported lazily: plotting is optional for most users)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.stem + ".partial" + path.suffix)
    fig.savefig(staging, dpi=dpi)
    pyplot().close(fig)
    staging.replace(path)
    return path
