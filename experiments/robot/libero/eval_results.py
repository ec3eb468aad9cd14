"""The results of an evaluation on disk: one JSON line per finished episode (appended and synced as it ends, so a
killed run loses at most the episodes in flight), the settings they were made with (a resumed run must match them),
and the pictures and videos of the rollouts."""

import json
import os
from pathlib import Path

from experiments.robot.libero.episodes import EpisodeResult
from experiments.robot.libero.eval_config import EvalConfig


def finished_episodes(path: Path) -> dict[tuple[int, int], dict]:
    """(task_id, trial) -> record, from an earlier run of the same command (a torn last line is ignored)."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(record["task_id"], record["trial"])] = record
    return done


# the settings that change what an episode does: results made under other values must not be resumed into
OUTCOME_SETTINGS = (
    "policy", "pretrained_checkpoint", "num_open_loop_steps", "temporal_ensembling", "ensemble_weight_decay",
    "max_steps", "num_steps_wait",
    "env_img_res", "center_crop", "prune_visual_tokens", "visual_token_pruner", "visual_token_budget", "fastv_layer",
    "action_readout", "pruner_eval_duplicates", "initial_states_path", "unnorm_key", "precision", "render_quality",
)  # fmt: skip

# settings added later, with the value that results files written before them were made with
ADDED_SETTINGS = {"temporal_ensembling": False, "ensemble_weight_decay": 0.01}


def check_resume_settings(cfg: EvalConfig, path: Path, resuming: bool) -> None:
    """Record the settings beside the results; refuse to add episodes to results made with other settings."""
    import torch

    from prismatic.files import write_text_atomic
    from prismatic.precision import resolve_precision

    settings = {key: getattr(cfg, key) for key in OUTCOME_SETTINGS}
    settings["precision"] = resolve_precision(cfg.precision, "cuda" if torch.cuda.is_available() else "cpu").name
    settings_path = path.with_suffix(".settings.json")
    if resuming and settings_path.exists():
        earlier = json.loads(settings_path.read_text())
        old = {k: earlier.get(k, ADDED_SETTINGS.get(k)) for k in settings}
        changed = {k: (old[k], v) for k, v in settings.items() if old[k] != v}
        if changed:
            listed = ", ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
            raise ValueError(
                f"{path} holds episodes evaluated with other settings ({listed}). Resuming would mix them: pass "
                "--run_id_note (or another --local_log_dir) for a new results file, or delete the old one."
            )
    write_text_atomic(settings_path, json.dumps(settings, indent=1) + "\n")


def append_record(path: Path, record: dict) -> None:
    """One line per episode, flushed to disk before the next starts: a killed run loses at most the episode in
    flight."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_artifacts(cfg: EvalConfig, result: EpisodeResult, task_seen: set) -> None:
    from experiments.robot.libero import visualize

    folder = Path(cfg.local_log_dir) / "rollouts" / cfg.run_name
    name = f"{cfg.task_suite_name}--task{result.task_id}--trial{result.trial}--success={result.success}"
    if cfg.save_rollout_video and result.frames:
        visualize.save_video(folder / f"{name}.mp4", result.frames)
    if cfg.save_rollout_video and result.pruning_frames:
        visualize.save_pruning_video(
            folder / f"{name}--kept_patches.mp4", result.pruning_frames, result.first_pruning["num_patches"],
            cfg.num_images_in_input,
        )  # fmt: skip
    if cfg.save_pruning_picture and result.first_pruning is not None and result.task_id not in task_seen:
        task_seen.add(result.task_id)
        visualize.save_pruning_picture(
            folder / f"{cfg.task_suite_name}--task{result.task_id}--kept_patches.png", result.first_observation,
            result.first_pruning["kept_indices"], result.first_pruning["num_patches"], cfg.num_images_in_input,
            result.task,
        )  # fmt: skip
