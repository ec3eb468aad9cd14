"""The evaluation's settings: upstream's `run_libero_eval.py` flags (its `GenerateConfig`) with their checks, and the
renderer an evaluation uses."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from experiments.robot.libero import libero_utils as lu
from experiments.robot.libero.episodes import ENSEMBLE_WEIGHT_DECAY
from prismatic.policy.options import PolicyOptions

POLICY_PLACEMENTS = ("auto", "workers", "shared")


@dataclass
class EvalConfig(PolicyOptions):
    """Upstream's evaluation flags: the policy's (``PolicyOptions``) and the episodes'."""

    # fmt: off
    pretrained_checkpoint: str = ""                 # checkpoint folder or Hub id (not needed for --policy scripted)
    num_open_loop_steps: int = 8                    # actions executed per policy query
    temporal_ensembling: bool = False               # ACT's: query every step (needs --num_open_loop_steps 1) and
                                                    # act on the weighted mean of every chunk's guess for that step
    ensemble_weight_decay: float = ENSEMBLE_WEIGHT_DECAY  # its weights exp(-m i), i = 0 the oldest guess: ACT's
                                                    # 0.01; negative trusts newer guesses more (README)
    render_quality: str = "auto"                    # fast | full | auto: as the checkpoint's training frames (full
                                                    # for released checkpoints; fast for --policy scripted)

    task_suite_name: str = "libero_spatial"         # libero_spatial | libero_object | libero_goal | libero_10 | libero_90
    num_steps_wait: int = 10
    num_trials_per_task: int = 50
    initial_states_path: str = "DEFAULT"            # or a {suite}_metainfo.json from regenerate_libero_dataset.py
    env_img_res: int = 256
    task_ids: Optional[List[int]] = None            # default: every task of the suite
    max_steps: Optional[int] = None                 # default: the suite's (upstream TASK_MAX_STEPS)

    policy: str = "vla"                             # vla | scripted (the expert, to validate the harness)
    num_workers: int = 1                            # simulator processes
    policy_placement: str = "auto"                  # with num_workers > 1: workers (a copy of the policy in each
                                                    # simulator process, one CPU thread each) | shared (one copy in
                                                    # this process, queries batched across workers) | auto (shared
                                                    # on a GPU, workers on the CPU: README, "Simulation speed")
    run_id_note: Optional[str] = None
    local_log_dir: str = "./experiments/logs"
    save_rollout_video: bool = False                # mp4 per episode (+ kept-patch overlay when pruning) in rollouts/
    save_pruning_picture: bool = True               # kept patches over both cameras, first query of each task
    # fmt: on

    def __post_init__(self):
        super().__post_init__()
        lu.check_suite_name(self.task_suite_name)
        if self.policy not in ("vla", "scripted"):
            raise ValueError(f"--policy must be 'vla' or 'scripted', got {self.policy!r}")
        if self.policy == "vla":
            self.require_checkpoint(", or --policy scripted")
        if "image_aug" in self.pretrained_checkpoint and not self.center_crop:
            raise ValueError("this checkpoint was trained with image augmentation: evaluate with --center_crop True")
        if self.temporal_ensembling and self.num_open_loop_steps != 1:
            raise ValueError(
                "--temporal_ensembling True queries the policy every step: pass --num_open_loop_steps 1 with it"
            )
        if self.num_workers < 1:
            raise ValueError("--num_workers must be at least 1")
        if self.policy_placement not in POLICY_PLACEMENTS:
            raise ValueError(f"--policy_placement must be one of {POLICY_PLACEMENTS}, got {self.policy_placement!r}")
        if self.render_quality != "auto":
            from experiments.robot.libero.visual_meshes import check_render_quality

            check_render_quality(self.render_quality)

    @property
    def run_name(self) -> str:
        source = "scripted" if self.policy == "scripted" else Path(self.pretrained_checkpoint.rstrip("/")).name
        pruner = self.visual_token_pruner
        if pruner is not None:  # results of different pruners must never share (and resume from) one file
            pruner += f"{self.visual_token_budget}" if self.visual_token_budget is not None else ""
            pruner += f"-k{self.fastv_layer}" if self.visual_token_pruner == "fastv" else ""
        duplicates = self.pruner_eval_duplicates and f"duplicates-{self.pruner_eval_duplicates}"
        ensembled = self.temporal_ensembling and "temporal_ensembling"
        if ensembled and self.ensemble_weight_decay != ENSEMBLE_WEIGHT_DECAY:
            ensembled += f"-m{self.ensemble_weight_decay:g}"
        parts = [source, f"seed{self.seed}", pruner, duplicates, ensembled, self.run_id_note]
        return "--".join(p for p in parts if p)

    @property
    def results_path(self) -> Path:
        return Path(self.local_log_dir) / f"EVAL-{self.task_suite_name}-{self.run_name}.jsonl"


def resolve_render_quality(cfg: EvalConfig) -> str:
    """The renderer to evaluate with: ``auto`` renders as the policy's training frames were (our checkpoints record
    it; released ones, which do not, were trained on LIBERO's full meshes); another choice is kept, with a warning
    when it differs from the training frames'."""
    if cfg.policy == "scripted":
        return "fast" if cfg.render_quality == "auto" else cfg.render_quality
    from prismatic.policy.checkpoints import resolve_checkpoint

    config = json.loads((resolve_checkpoint(cfg.pretrained_checkpoint) / "config.json").read_text())
    trained = config.get("render_quality", "full")
    if cfg.render_quality == "auto":
        return trained
    if cfg.render_quality != trained:
        print(
            f"[eval] warning: rendering with --render_quality {cfg.render_quality}, but {cfg.pretrained_checkpoint} "
            f"was trained on {trained!r} renders: the policy sees images unlike its training frames"
        )
    return cfg.render_quality
