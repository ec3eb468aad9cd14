"""Small file helpers: the user's cache folder, and atomic writes for scripts that must never leave a torn file."""

import contextlib
import os
import uuid
from pathlib import Path


def cache_root() -> Path:
    """Where derived data is cached (dataset statistics of read-only data, decimated meshes): ``$LIGHTVLA_CACHE``,
    default ``~/.cache/lightvla``."""
    return Path(os.environ.get("LIGHTVLA_CACHE") or Path.home() / ".cache" / "lightvla")


@contextlib.contextmanager
def staged(path: Path):
    """A fresh file name beside ``path`` to write, renamed over ``path`` when the block succeeds and removed when it
    fails: readers see the old file or the new one, never half of one, and writers working at once (processes of a
    job, workers sharing a cache) never write into the same staging file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with staged(path) as staging:
        staging.write_text(text)
