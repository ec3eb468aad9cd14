"""Action / proprio (un)normalisation with the statistics format of `dataset_statistics.json`.

Statistics for one dataset look like ``{"action": {q01, q99, mean, std, min, max, mask}, "proprio": {...},
"num_transitions": int, "num_trajectories": int}``; a checkpoint's ``norm_stats`` maps dataset names to these.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from prismatic.vla.constants import NormalizationType

_EPS = 1e-8


def _bounds(stats: Mapping, norm_type: NormalizationType) -> tuple[np.ndarray, np.ndarray]:
    if norm_type == NormalizationType.BOUNDS_Q99:
        return np.asarray(stats["q01"], np.float64), np.asarray(stats["q99"], np.float64)
    if norm_type == NormalizationType.BOUNDS:
        return np.asarray(stats["min"], np.float64), np.asarray(stats["max"], np.float64)
    raise ValueError(f"no bounds for normalisation type {norm_type}")


def _mask(stats: Mapping, dim: int) -> np.ndarray:
    return np.asarray(stats.get("mask", [True] * dim), dtype=bool)


def normalize(x: np.ndarray, stats: Mapping, norm_type: NormalizationType) -> np.ndarray:
    """Map raw values into [-1, 1] (bounds) or to z-scores (normal); dims whose ``mask`` is False pass through."""
    x = np.asarray(x, dtype=np.float64)
    mask = _mask(stats, x.shape[-1])
    if norm_type == NormalizationType.NORMAL:
        out = (x - np.asarray(stats["mean"])) / (np.asarray(stats["std"]) + _EPS)
    else:
        low, high = _bounds(stats, norm_type)
        out = np.clip(2 * (x - low) / (high - low + _EPS) - 1, -1, 1)
        out = np.where(high == low, 0.0, out)  # a constant dimension carries no information
    return np.where(mask, out, x).astype(np.float32)


def unnormalize(x: np.ndarray, stats: Mapping, norm_type: NormalizationType) -> np.ndarray:
    """Inverse of :func:`normalize` (up to the clipping)."""
    x = np.asarray(x, dtype=np.float64)
    mask = _mask(stats, x.shape[-1])
    if norm_type == NormalizationType.NORMAL:
        out = x * (np.asarray(stats["std"]) + _EPS) + np.asarray(stats["mean"])
    else:
        low, high = _bounds(stats, norm_type)
        out = 0.5 * (x + 1) * (high - low + _EPS) + low
    return np.where(mask, out, x).astype(np.float32)


def resolve_unnorm_key(norm_stats: Mapping | None, unnorm_key: str | None) -> str:
    """Pick the dataset whose statistics un-normalise the actions; explain what to pass when that is ambiguous."""
    if not norm_stats:
        raise ValueError(
            "This checkpoint has no dataset statistics (norm_stats), so actions cannot be un-normalised. "
            "Put the training run's dataset_statistics.json into the checkpoint folder."
        )
    if unnorm_key is None or unnorm_key == "":
        if len(norm_stats) != 1:
            raise ValueError(
                f"The checkpoint was trained on several datasets; pass unnorm_key, one of {sorted(norm_stats)}"
            )
        return next(iter(norm_stats))
    if unnorm_key in norm_stats:
        return unnorm_key
    if f"{unnorm_key}_no_noops" in norm_stats:  # LIBERO suites are stored under their no-op-filtered name
        return f"{unnorm_key}_no_noops"
    raise ValueError(f"Unknown unnorm_key {unnorm_key!r}; this checkpoint has statistics for {sorted(norm_stats)}")
