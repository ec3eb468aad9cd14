"""Replay LIBERO demonstrations to make the training set upstream fine-tunes on (spec §5.5).

    python experiments/robot/libero/regenerate_libero_dataset.py --libero_task_suite libero_object \
        --libero_raw_data_dir LIBERO/libero/datasets/libero_object \
        --libero_target_dir datasets/libero/libero_object_no_noops

For every demo of every task: restore its first simulator state, wait 10 steps, replay its actions while dropping
no-ops (no arm motion and an unchanged gripper), record images at 256x256 and the robot state at each kept step,
and keep the demo only if the replay succeeds. Works on the LIBERO authors' raw files and on our scripted ones.
Task files already in the target folder are kept (the command resumes); `--overwrite True` redoes them.
Also writes `{suite}_metainfo.json` (success and initial state per demo), usable as `--initial_states_path`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import draccus
import numpy as np
from tqdm import tqdm

from experiments.robot.libero import libero_utils as lu
from experiments.robot.libero.visual_meshes import check_render_quality
from prismatic.files import write_text_atomic
from prismatic.vla.datasets import libero_hdf5


@dataclass
class RegenerateConfig:
    libero_task_suite: str = "libero_object"  # libero_spatial | libero_object | libero_goal | libero_10 | libero_90
    libero_raw_data_dir: Path = Path("LIBERO/libero/datasets/libero_object")  # folder of {task}_demo.hdf5 files
    libero_target_dir: Path = Path("datasets/libero/libero_object_no_noops")
    resolution: int = 256
    overwrite: bool = False
    render_quality: str = "full"  # full: LIBERO's meshes, as upstream's regenerated data | fast: decimated visual meshes

    def __post_init__(self):
        lu.check_suite_name(self.libero_task_suite)
        check_render_quality(self.render_quality)
        if not Path(self.libero_raw_data_dir).is_dir():
            raise FileNotFoundError(
                f"--libero_raw_data_dir {self.libero_raw_data_dir} does not exist. Point it at a folder of LIBERO "
                "`*_demo.hdf5` files (the LIBERO authors' download, or generate_scripted_demos.py output)."
            )


def replay_demo(env, demo: libero_hdf5.Demo, drop_noops: bool = True, render: bool = True):
    """Replay `demo` from its first state; returns (success, the re-recorded Demo of the kept steps)."""
    if demo.states.ndim != 2 or demo.states.shape[1] == 0:
        raise libero_hdf5.DemoFileError(
            "this demo has no simulator states (converted from RLDS?), so it cannot be replayed; "
            "train on it directly instead"
        )
    env.reset()
    env.set_init_state(demo.states[0])
    obs = lu.settle(env)
    kept: dict[str, list] = {"actions": [], "states": []}
    frames: dict[str, list] = {key: [] for key in libero_hdf5.IMAGE_KEYS}
    previous = None
    done = False
    for action in demo.actions:
        if drop_noops and lu.is_noop(action, previous):
            continue
        previous = action
        first = not kept["states"]
        kept["states"].append(demo.states[0] if first else env.get_sim_state())
        record = lu.robot_record(obs)
        if first:
            record["robot_states"] = demo.robot_states[0]
        for key, value in record.items():
            kept.setdefault(key, []).append(value)
        kept["actions"].append(action)
        if render:
            frames["agentview_rgb"].append(obs[lu.CAMERA_KEYS["agentview"]])
            frames["eye_in_hand_rgb"].append(obs[lu.CAMERA_KEYS["wrist"]])
        obs, _, done, _ = env.step(np.asarray(action).tolist())
    arrays = {key: np.asarray(value) for key, value in kept.items()}
    images = {key: np.stack(value) for key, value in frames.items()} if render else {}
    return bool(done), libero_hdf5.Demo(**arrays, images=images)


def regenerate_task(cfg: RegenerateConfig, task: lu.LiberoTask, metainfo: dict) -> tuple[int, int]:
    """Regenerate one task file; returns (kept, total) demo counts."""
    import h5py

    source = Path(cfg.libero_raw_data_dir) / libero_hdf5.task_file_name(task.name)
    target = Path(cfg.libero_target_dir) / source.name
    if not source.exists():
        raise FileNotFoundError(f"{source} is missing: the raw folder has no demonstrations for task {task.name!r}.")
    env = lu.make_env(task, resolution=cfg.resolution, cameras=True, render_quality=cfg.render_quality)
    task_info, kept = {}, 0
    env_args = {
        "env_name": "OffScreenRenderEnv", "camera_size": cfg.resolution, "source": str(source),
        "render_quality": cfg.render_quality,
    }  # fmt: skip
    with h5py.File(source, "r") as f, libero_hdf5.DemoFileWriter(target, task.language, env_args, task.bddl_file) as out:
        names = libero_hdf5.demo_names(f)
        for name in tqdm(names, desc=task.name[:40], unit="demo", leave=False):
            demo = libero_hdf5.read_demo(f, name, with_images=False)
            success, replayed = replay_demo(env, demo)
            task_info[name] = {"success": success, "initial_state": demo.states[0].tolist()}
            if success:
                out.append(replayed)
                kept += 1
    lu.close_env(env)
    metainfo[task.language.replace(" ", "_")] = task_info
    if not kept:
        target.unlink(missing_ok=True)
    return kept, len(names)


@draccus.wrap()
def main(cfg: RegenerateConfig) -> dict:
    target_dir = Path(cfg.libero_target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    metainfo_path = target_dir / f"{cfg.libero_task_suite}_metainfo.json"
    metainfo = json.loads(metainfo_path.read_text()) if metainfo_path.exists() else {}
    counts = {}
    for task_id in range(lu.num_tasks(cfg.libero_task_suite)):
        task = lu.get_task(cfg.libero_task_suite, task_id)
        if not (Path(cfg.libero_raw_data_dir) / libero_hdf5.task_file_name(task.name)).exists():
            print(f"[skip] no raw demonstrations for task {task_id} ({task.name})")
            continue
        if (target_dir / libero_hdf5.task_file_name(task.name)).exists() and not cfg.overwrite:
            print(f"[skip] task {task_id} already regenerated")
            continue
        counts[task.name] = regenerate_task(cfg, task, metainfo)
        write_text_atomic(metainfo_path, json.dumps(metainfo))
        kept, total = counts[task.name]
        print(f"task {task_id}: kept {kept}/{total} demos after replay ({task.language})")
    if counts:
        kept, total = (sum(c[i] for c in counts.values()) for i in (0, 1))
        print(f"done: {kept}/{total} demos replayed successfully -> {target_dir}")
    return counts


if __name__ == "__main__":
    main()
