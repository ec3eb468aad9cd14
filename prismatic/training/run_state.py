"""Resumable training state: where checkpoints of a run live, and the optimizer/scheduler/RNG state beside them.

Each checkpoint folder is a complete released-style policy folder (merged model, processor, heads, statistics) plus
`lora_adapter/` and `training_state.pt`; folders are written atomically (`prismatic.models.checkpoints`), so a crash
while saving leaves the previous checkpoint intact.
"""

import random
import re
from pathlib import Path

import numpy as np
import torch

TRAINING_STATE = "training_state.pt"
_STEP_FOLDER = re.compile(r"--(\d+)_chkpt$")


def checkpoint_folder(run_dir: Path, step: int, latest_only: bool) -> Path:
    """Upstream's naming: the run folder itself when keeping only the latest, else `{run_dir}--{step}_chkpt`."""
    return run_dir if latest_only else run_dir.with_name(f"{run_dir.name}--{step}_chkpt")


def step_suffix(step: int, latest_only: bool) -> str:
    return "latest_checkpoint.pt" if latest_only else f"{step}_checkpoint.pt"


def find_resumable(run_dir: Path, step: int | None = None) -> Path | None:
    """The checkpoint folder of `run_dir` to resume from: the given step, else the highest step saved."""
    candidates = {}
    for folder in [run_dir, *run_dir.parent.glob(f"{run_dir.name}--*_chkpt")]:
        if not (folder / TRAINING_STATE).exists():
            continue
        named = _STEP_FOLDER.search(folder.name)  # the step is in the name; only the latest-only folder is opened
        candidates[int(named.group(1)) if named else _saved_step(folder)] = folder
    if step is not None:
        return candidates.get(step)
    return candidates[max(candidates)] if candidates else None


def _saved_step(folder: Path) -> int:
    return int(torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=False)["step"])


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
