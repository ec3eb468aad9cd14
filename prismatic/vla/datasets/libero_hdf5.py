"""The LIBERO demonstration file format (HDF5), read and written in one place.

One file per task, `{task_name}_demo.hdf5`, as the LIBERO authors and upstream's `regenerate_libero_dataset.py`
write it:

    data/                       attrs: problem_info (JSON with "language_instruction"), env_args, bddl_file_name,
                                       num_demos, total
    data/demo_{i}/              attrs: num_samples
        actions (T, 7)  states (T, S)  robot_states (T, 9)  rewards (T,)  dones (T,)
        obs/agentview_rgb (T, H, W, 3) uint8, as rendered (upside down; readers turn it 180°)
        obs/eye_in_hand_rgb (T, H, W, 3) uint8
        obs/ee_pos (T, 3)  obs/ee_ori (T, 3) axis-angle  obs/ee_states (T, 6)  obs/gripper_states (T, 2)
        obs/joint_states (T, 7)

The raw files from the LIBERO authors have the same layout with 128 px images and without `ee_pos`/`ee_ori`
(they have `ee_states`); both are accepted when reading.
"""

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_KEYS = ("agentview_rgb", "eye_in_hand_rgb")
REQUIRED_OBS_KEYS = (*IMAGE_KEYS, "gripper_states")
DEMO_FILE_SUFFIX = "_demo.hdf5"


class DemoFileError(ValueError):
    """A demonstration file is missing, unreadable or lacks the LIBERO keys."""


def _h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError("Reading LIBERO demonstrations needs h5py: pip install -e '.[libero]'") from err
    return h5py


@dataclass
class Demo:
    """One demonstration, step-aligned: row t is the observation at step t and the action taken from it."""

    actions: np.ndarray  # (T, 7) float
    states: np.ndarray  # (T, S) flattened MuJoCo states
    robot_states: np.ndarray  # (T, 9) gripper qpos, eef pos, eef quat
    ee_pos: np.ndarray  # (T, 3)
    ee_ori: np.ndarray  # (T, 3) axis-angle
    gripper_states: np.ndarray  # (T, 2)
    joint_states: np.ndarray  # (T, 7)
    images: dict[str, np.ndarray] = field(default_factory=dict)  # IMAGE_KEYS -> (T, H, W, 3) uint8, not rotated

    def __len__(self) -> int:
        return len(self.actions)


def task_file_name(task_name: str) -> str:
    return f"{task_name}{DEMO_FILE_SUFFIX}"


def language_from_file_name(path: Path) -> str:
    """LIBERO names files after the instruction; LIBERO-90 prefixes the scene (`KITCHEN_SCENE3_turn_on_...`)."""
    stem = path.name.removesuffix(DEMO_FILE_SUFFIX)
    stem = re.sub(r"^([A-Z0-9]+_)+", "", stem)
    return stem.replace("_", " ")


class DemoFileWriter:
    """Writes one LIBERO task file demo by demo (nothing held in memory), made visible atomically on success:
    a crash leaves the previous file, or none, never half a file.

        with DemoFileWriter(path, language, env_args, bddl_file_name) as writer:
            writer.append(demo)
    """

    def __init__(self, path: Path, language: str, env_args: dict, bddl_file_name: str):
        self.path = Path(path)
        self.attrs = {
            "problem_info": json.dumps({"language_instruction": language}),
            "env_args": json.dumps(env_args),
            "bddl_file_name": bddl_file_name,
        }
        self.num_demos = self.total = 0

    def __enter__(self) -> "DemoFileWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.path.with_name(self.path.name + ".partial")
        self.file = _h5py().File(self.staging, "w")
        self.data = self.file.create_group("data")
        return self

    def append(self, demo: Demo) -> None:
        group = self.data.create_group(f"demo_{self.num_demos}")
        group.attrs["num_samples"] = len(demo)
        for key in ("actions", "states", "robot_states"):
            group.create_dataset(key, data=getattr(demo, key))
        dones = np.zeros(len(demo), dtype=np.uint8)
        dones[-1] = 1
        group.create_dataset("rewards", data=dones.copy())
        group.create_dataset("dones", data=dones)
        obs = group.create_group("obs")
        for key in ("ee_pos", "ee_ori", "gripper_states", "joint_states"):
            obs.create_dataset(key, data=getattr(demo, key))
        obs.create_dataset("ee_states", data=np.concatenate([demo.ee_pos, demo.ee_ori], axis=1))
        for key, frames in demo.images.items():
            # one frame per chunk: the data loader reads single frames at random
            obs.create_dataset(key, data=frames, chunks=(1, *frames.shape[1:]), compression="gzip", compression_opts=1)
        self.num_demos += 1
        self.total += len(demo)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.data.attrs.update({**self.attrs, "num_demos": self.num_demos, "total": self.total})
        self.file.close()
        if exc_type is None:
            os.replace(self.staging, self.path)
        else:
            self.staging.unlink(missing_ok=True)


def write_demo_file(path: Path, demos: list[Demo], language: str, env_args: dict, bddl_file_name: str) -> None:
    """Write `demos` as one LIBERO task file, atomically."""
    with DemoFileWriter(path, language, env_args, bddl_file_name) as writer:
        for demo in demos:
            writer.append(demo)


def write_task_files(out_dir: Path, episodes, source: dict) -> dict[str, int]:
    """(instruction, demo) pairs -> one task file per instruction in ``out_dir``, demo by demo (bounded memory), each
    renamed into place when complete; returns the demos per instruction. ``source`` goes into the files' env_args."""
    from contextlib import ExitStack

    from tqdm import tqdm

    counts: dict[str, int] = {}
    with ExitStack() as stack:
        writers: dict[str, DemoFileWriter] = {}
        for language, demo in tqdm(episodes, desc="episodes", unit="episode"):
            if language not in writers:
                path = Path(out_dir) / task_file_name(language.replace(" ", "_"))
                writers[language] = stack.enter_context(DemoFileWriter(path, language, source, ""))
            writers[language].append(demo)
            counts[language] = counts.get(language, 0) + 1
    return counts


def list_demo_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DemoFileError(f"Dataset folder {folder} does not exist.")
    return sorted(folder.glob(f"*{DEMO_FILE_SUFFIX}")) or sorted(folder.glob("*.hdf5"))


def demo_names(f) -> list[str]:
    """`demo_0, demo_1, ...` in numeric order (h5py lists them alphabetically: demo_10 before demo_2)."""
    if "data" not in f:
        raise DemoFileError(f"{f.filename} has no 'data' group: not a LIBERO demonstration file.")
    names = [name for name in f["data"] if name.startswith("demo_")]
    return sorted(names, key=lambda name: int(name.split("_")[1]))


def read_render_quality(f) -> str:
    """How the file's frames were rendered: "fast" (decimated visual meshes) or "full" (LIBERO as shipped; files that
    do not say, such as the official demos, were rendered that way)."""
    env_args = f["data"].attrs.get("env_args")
    return json.loads(env_args).get("render_quality", "full") if env_args else "full"


def read_language(f) -> str:
    info = f["data"].attrs.get("problem_info")
    if info is not None:
        language = "".join(json.loads(info).get("language_instruction", "")).strip().strip('"')
        if language:
            return language
    return language_from_file_name(Path(f.filename))


def check_demo_group(f, name: str) -> None:
    group = f["data"][name]
    missing = [key for key in ("actions", "states") if key not in group]
    missing += [f"obs/{key}" for key in REQUIRED_OBS_KEYS if key not in group.get("obs", {})]
    if "obs" in group and not ({"ee_pos", "ee_states"} & set(group["obs"])):
        missing.append("obs/ee_pos (or obs/ee_states)")
    if missing:
        raise DemoFileError(
            f"{f.filename}: data/{name} lacks {', '.join(missing)}. Expected a LIBERO demonstration file as written by "
            "regenerate_libero_dataset.py or generate_scripted_demos.py."
        )


def read_proprio(obs_group, step: int | slice = slice(None)) -> np.ndarray:
    """8-D proprio (eef position, axis-angle, gripper finger positions; spec §5.1 `observation/state`) of one step,
    or (T, 8) for all steps."""
    if "ee_pos" in obs_group and "ee_ori" in obs_group:
        parts = [obs_group["ee_pos"][step], obs_group["ee_ori"][step]]
    else:
        parts = [obs_group["ee_states"][step]]
    return np.concatenate([*parts, obs_group["gripper_states"][step]], axis=-1).astype(np.float32)


def read_demo(f, name: str, with_images: bool = True) -> Demo:
    """A whole demo (used by replay and tests; the training dataset reads single frames instead)."""
    check_demo_group(f, name)
    group = f["data"][name]
    obs = group["obs"]
    proprio = read_proprio(obs)
    length = len(group["actions"])
    return Demo(
        actions=group["actions"][()],
        states=group["states"][()],
        robot_states=group["robot_states"][()] if "robot_states" in group else np.zeros((length, 9)),
        ee_pos=proprio[:, :3],
        ee_ori=proprio[:, 3:6],
        gripper_states=proprio[:, 6:],
        joint_states=obs["joint_states"][()] if "joint_states" in obs else np.zeros((length, 7)),
        images={key: obs[key][()] for key in IMAGE_KEYS} if with_images else {},
    )
