"""Our LeRobot datasets against the real `lerobot` library, both directions. Run with the python of a virtual
environment that has lerobot (it pins torch < 2.11, so it cannot share ours):

    python3 -m venv /tmp/lerobot-venv && /tmp/lerobot-venv/bin/pip install lerobot==0.4.4
    /tmp/lerobot-venv/bin/python scripts/lerobot_client_check.py read runs/lerobot/libero_object   # our export
    /tmp/lerobot-venv/bin/python scripts/lerobot_client_check.py write tests/fixtures/lerobot-v3.0  # the fixture

`read` opens a folder with `LeRobotDataset` and prints what the library sees (episodes, frames, tasks, features, the
first sample's shapes and values). `write` records a small LIBERO-like dataset through `LeRobotDataset.create` /
`add_frame` / `save_episode` into the folder, with `expected.npz` beside it (the arrays it was given), so that
`tests/test_lerobot_format.py` checks our reader against a dataset the real library wrote. Needs only lerobot and
numpy: this script imports nothing from this repository.
"""

import argparse
import json
from pathlib import Path

import numpy as np

FPS, SIZE = 10, 64
TASKS = ["pick up the alphabet soup and place it in the basket", "pick up the milk and place it in the basket"]
LENGTHS = [7, 5]


def frames(episode: int, length: int, camera: int) -> np.ndarray:
    """Smooth gradients (a video codec keeps them), different per episode, step and camera, upright."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([
        np.stack([(x * 3 + t * 7 + episode * 50) % 256, (y * 3 + camera * 90) % 256, (x + y + 4 * t) % 256], -1)
        for t in range(length)
    ]).astype(np.uint8)  # fmt: skip


def write(folder: Path) -> None:
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    camera = {"dtype": "video", "shape": (SIZE, SIZE, 3), "names": ["height", "width", "channels"]}
    features = {
        "observation.images.image": camera,
        "observation.images.image2": camera,
        "observation.state": {"dtype": "float32", "shape": (8,), "names": None},
        "action": {"dtype": "float32", "shape": (7,), "names": None},
    }
    dataset = LeRobotDataset.create("local/libero_fixture", FPS, features=features, root=folder, robot_type="panda")
    rng = np.random.default_rng(0)
    expected = {}
    for episode, (task, length) in enumerate(zip(TASKS, LENGTHS)):
        images = [frames(episode, length, 0), frames(episode, length, 1)]
        state = rng.uniform(-1, 1, (length, 8)).astype(np.float32)
        action = rng.uniform(-1, 1, (length, 7)).astype(np.float32)
        for t in range(length):
            dataset.add_frame({"observation.images.image": images[0][t], "observation.images.image2": images[1][t],
                               "observation.state": state[t], "action": action[t], "task": task})  # fmt: skip
        dataset.save_episode()
        expected |= {f"image_{episode}": images[0], f"image2_{episode}": images[1], f"state_{episode}": state,
                     f"action_{episode}": action}  # fmt: skip
    dataset.finalize()
    np.savez_compressed(folder / "expected.npz", **expected)
    (folder / "README.md").write_text(
        "# A LeRobot v3.0 dataset written by the real `lerobot` library\n\n"
        f"Written by `scripts/lerobot_client_check.py write` with lerobot {lerobot.__version__} "
        f"(numpy {np.__version__}): {len(TASKS)} episodes ({LENGTHS} frames, {SIZE} px, {FPS} fps) through "
        "`LeRobotDataset.create` / `add_frame` / `save_episode` / `finalize`. `expected.npz` holds the arrays it was "
        "given (frames upright). `tests/test_lerobot_format.py` reads it with our reader.\n"
    )
    print(f"wrote {folder}")


def read(folder: Path) -> None:
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    # pyav: torchcodec, lerobot's default decoder, needs the system's FFmpeg libraries, which PyPI does not provide
    dataset = LeRobotDataset("local/" + folder.name, root=folder, video_backend="pyav")
    meta = dataset.meta
    print(f"lerobot {lerobot.__version__} read {folder}")
    print(f"  episodes {dataset.num_episodes}, frames {dataset.num_frames}, fps {dataset.fps}, tasks {len(meta.tasks)}")
    print(f"  features: {json.dumps({k: [v['dtype'], list(v['shape'])] for k, v in meta.features.items()})}")
    item = dataset[0]
    for key, value in item.items():
        shape = tuple(value.shape) if hasattr(value, "shape") else value
        print(f"  [0] {key}: {shape}")
    last = dataset[len(dataset) - 1]
    print(f"  last sample: episode {int(last['episode_index'])}, frame {int(last['frame_index'])}, task {last['task']!r}")
    image = item["observation.images.image"]
    print(f"  first image: {tuple(image.shape)} {image.dtype}, range {float(image.min()):.3f} to {float(image.max()):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["read", "write"], help="read a folder with lerobot, or write the fixture")
    parser.add_argument("folder", type=Path, help="the LeRobot dataset folder")
    args = parser.parse_args()
    (read if args.mode == "read" else write)(args.folder)
