"""Dataset statistics in the released `dataset_statistics.json` format, computed once per dataset and cached.

    {"<dataset_name>": {"action": {mean, std, max, min, q01, q99, mask}, "proprio": {mean, std, max, min, q01, q99},
                        "num_transitions": int, "num_trajectories": int}}

Computed over every step of every demo (un-normalised, after the gripper standardisation), as upstream's
`get_dataset_statistics` does over the full dataset (spec §5.3).
"""

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from prismatic.files import cache_root, write_text_atomic

CACHE_DIR = cache_root()


def per_dimension_statistics(values: np.ndarray) -> dict[str, list[float]]:
    values = np.asarray(values, dtype=np.float64)
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "max": values.max(0).tolist(),
        "min": values.min(0).tolist(),
        "q01": np.quantile(values, 0.01, axis=0).tolist(),
        "q99": np.quantile(values, 0.99, axis=0).tolist(),
    }


def compute_statistics(episodes: Iterable[tuple[np.ndarray, np.ndarray]], action_mask: list[bool]) -> dict:
    """Statistics of (actions (T, A), proprio (T, P)) episodes; `action_mask` marks the normalised dimensions."""
    actions, proprio = [], []
    for episode_actions, episode_proprio in episodes:
        actions.append(episode_actions)
        proprio.append(episode_proprio)
    if not actions:
        raise ValueError("cannot compute dataset statistics: the dataset has no episodes")
    all_actions, all_proprio = np.concatenate(actions), np.concatenate(proprio)
    return {
        "action": {**per_dimension_statistics(all_actions), "mask": [bool(m) for m in action_mask]},
        "proprio": per_dimension_statistics(all_proprio),
        "num_transitions": int(len(all_actions)),
        "num_trajectories": int(len(actions)),
    }


def fingerprint(files: list[Path], extra: str = "") -> str:
    """Changes when a file is added, removed, replaced or rewritten (name, size, modification time)."""
    digest = hashlib.sha256(extra.encode())
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cache_candidates(data_dir: Path, key: str) -> list[Path]:
    """Next to the data first (shared by everyone who reads it), then the user's cache (read-only data)."""
    name = f"dataset_statistics_{key}.json"
    return [Path(data_dir) / name, CACHE_DIR / name]


def load_cached(data_dir: Path, key: str) -> dict | None:
    for path in cache_candidates(data_dir, key):
        if path.exists():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                continue  # a torn or foreign file: recompute
    return None


def save_cached(data_dir: Path, key: str, statistics: dict) -> Path | None:
    for path in cache_candidates(data_dir, key):
        try:
            write_text_atomic(path, json.dumps(statistics, indent=2))
            return path
        except OSError:
            continue
    return None
