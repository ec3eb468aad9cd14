"""Resumable training state: where checkpoints of a run live, and the optimizer/scheduler/RNG state beside them.

Each checkpoint folder is a complete released-style policy folder (merged model, processor, heads, statistics) plus
`lora_adapter/` and `training_state.pt`; folders are written atomically (`prismatic.policy.checkpoints`), so a crash
while saving leaves the previous checkpoint intact.
"""

import random
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.policy.checkpoints import (
    CheckpointError,
    load_heads,
    save_policy,
)
from prismatic.training.config import FinetuneConfig
from prismatic.training.distributed import TrainingProcess
from prismatic.training.lora import merged_state_dict
from prismatic.training.metrics import METRICS_FILE
from prismatic.training.policy import TrainablePolicy, base_vla

TRAINING_STATE = "training_state.pt"
# Files of the run folder itself, kept when that folder is also the latest checkpoint (--save_latest_checkpoint_only)
RUN_FILES = (METRICS_FILE, "base_model")
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


def rng_state(device: torch.device) -> dict:
    """This process's random state; on a GPU also the device's generator, which the pruning noise draws from."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda":
        if "cuda" not in state:
            raise CheckpointError("--resume on a GPU from a checkpoint without GPU random state (saved on the CPU?)")
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device's generator


def seed_rank(seed: int, rank: int) -> None:
    """Each rank its own random stream (pruning noise, dropout): with one seed, every rank would draw the same noise."""
    seed_everything(seed + rank)


def restore_rng(states: list[dict] | dict, process: TrainingProcess, seed: int, step: int) -> None:
    """Each rank continues its own saved stream; resumed on another number of processes, streams restart (and say so)."""
    states = states if isinstance(states, list) else [states]  # checkpoints before per-rank states held one
    if len(states) == process.world_size:
        set_rng_state(states[process.rank], process.device)
        return
    if process.main:
        print(
            f"[finetune] warning: the checkpoint holds the random state of {len(states)} process(es), this run has "
            f"{process.world_size}: random streams restart from seed {seed} + rank + step, so the resumed run is not "
            "bit-identical to an uninterrupted one"
        )
    seed_rank(seed + step, process.rank)


def save_checkpoint(
    cfg, run_dir, step, policy: TrainablePolicy, processor, optimizer, scheduler, dataset_statistics, rng: list[dict]
):
    """Rank 0 writes the folder; ``rng`` holds every rank's random state (``rng_state``), in rank order."""
    folder = checkpoint_folder(run_dir, step, cfg.save_latest_checkpoint_only)
    suffix = step_suffix(step, cfg.save_latest_checkpoint_only)
    vla = policy.vla
    model = base_vla(vla)
    state_dict = merged_state_dict(vla) if cfg.use_lora else None

    def extra(target: Path) -> None:
        if cfg.use_lora:
            vla.save_pretrained(target / "lora_adapter")
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
                "config": asdict(cfg),
            },
            target / TRAINING_STATE,
        )

    model.config.norm_stats = dataset_statistics
    save_policy(
        folder, model, processor, policy.action_head, policy.proprio_projector, suffix, dataset_statistics,
        vla_state_dict=state_dict, extra_writer=extra, preserve=RUN_FILES,
    )  # fmt: skip
    return folder


def restore_checkpoint(
    folder: Path, policy: TrainablePolicy, optimizer, scheduler, cfg: FinetuneConfig, process: TrainingProcess
) -> int:
    """Load adapter (or full weights), heads, optimizer, scheduler and RNG; returns the step to continue from."""
    state = torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=False)
    if cfg.use_lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(policy.vla, load_file(folder / "lora_adapter" / "adapter_model.safetensors"))
    else:
        loaded = OpenVLAForActionPrediction.from_pretrained(folder, dtype=next(policy.vla.parameters()).dtype)
        policy.vla.load_state_dict(loaded.state_dict())
    use_proprio = policy.proprio_projector is not None
    head, projector = load_heads(folder, base_vla(policy.vla).action_space.num_actions_chunk, use_proprio)
    policy.action_head.load_state_dict(head.state_dict())
    if use_proprio:
        policy.proprio_projector.load_state_dict(projector.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"], process, cfg.seed, int(state["step"]))
    return int(state["step"])
