"""Small file helpers: the user's cache folder, and atomic writes for scripts that must never leave a torn file."""

import os
from pathlib import Path


def cache_root() -> Path:
    """Where derived data is cached (dataset statistics of read-only data, decimated meshes): ``$LIGHTVLA_CACHE``,
    default ``~/.cache/lightvla``."""
    return Path(os.environ.get("LIGHTVLA_CACHE") or Path.home() / ".cache" / "lightvla")


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    staging.write_text(text)
    os.replace(staging, path)
