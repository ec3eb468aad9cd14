"""Small file helpers shared by scripts that must never leave a torn file behind."""

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    staging.write_text(text)
    os.replace(staging, path)
