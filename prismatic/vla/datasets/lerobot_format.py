"""LeRobot datasets (the format LeRobot, openpi and SmolVLA train on) read and written without the ``lerobot`` package.

Read: a local dataset folder of format v3.0 (episodes packed into shared files) or v2.x (one file per episode):

    v3.0  meta/info.json  meta/tasks.parquet  meta/episodes/chunk-*/file-*.parquet  data/chunk-*/file-*.parquet
          videos/<key>/chunk-*/file-*.mp4 (many episodes per file, located by from/to timestamps)
    v2.x  meta/info.json  meta/tasks.jsonl  meta/episodes.jsonl  data/chunk-*/episode_*.parquet
          videos/chunk-*/<key>/episode_*.mp4

Camera frames stored as video (decoded with PyAV; LeRobot encodes AV1 by default) or inside the parquet files
(``dtype: image``, PNG/JPEG bytes). Episodes come out as ``libero_hdf5.Demo`` (language, demo) pairs, so every
consumer of LIBERO HDF5 (conversion, training) takes them unchanged.

Orientation: LIBERO datasets in LeRobot format (converted from upstream's RLDS release) hold the frames upright, turned
180° from what the simulator renders; a ``Demo`` holds frames as rendered. The reader turns them back, the writer
turns them upright, so a demo survives the round trip and the policy sees the frames evaluation gives it
(``tests/test_lerobot_format.py`` checks this on frames of the real simulator).

Write: LeRobot v3.0 with the feature names of LeRobot's own LIBERO environment (``observation.images.image``,
``observation.images.image2``, ``observation.state`` (8), ``action`` (7)), frames as AV1 video as LeRobot writes them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from prismatic.vla.datasets.libero_hdf5 import Demo

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
LIBERO_FPS = 10  # LIBERO's control rate in the published LeRobot datasets
STATE_WIDTH, ACTION_WIDTH = 8, 7


class LeRobotFormatError(ValueError):
    """A LeRobot dataset folder cannot be read as asked; the message says what to do."""


@dataclass(frozen=True)
class FeatureNames:
    """Which LeRobot features hold LIBERO's two cameras, the 8-D state and the 7-D action."""

    image: str = "observation.images.image"
    wrist_image: str = "observation.images.image2"
    state: str = "observation.state"
    action: str = "action"

    def keys(self) -> tuple[str, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


# The LIBERO datasets people have: lerobot/libero (v3.0, video), HuggingFaceVLA/libero (v3.0, images in parquet; some
# copies name the wrist camera wrist_image), physical-intelligence/libero (openpi, v2.0, images in parquet).
KNOWN_FEATURE_NAMES = {
    "lerobot/libero": FeatureNames(),
    "HuggingFaceVLA/libero (wrist_image)": FeatureNames(wrist_image="observation.images.wrist_image"),
    "physical-intelligence/libero": FeatureNames("image", "wrist_image", "state", "actions"),
}


@dataclass(frozen=True)
class DatasetInfo:
    folder: Path
    version: str
    fps: float
    features: dict  # info.json's features: name -> {"dtype", "shape", ...}
    info: dict

    def path(self, template_key: str, **values) -> Path:
        return self.folder / self.info[template_key].format(**values)


def read_info(folder: Path) -> DatasetInfo:
    folder = Path(folder)
    path = folder / "meta" / "info.json"
    if not path.exists():
        raise LeRobotFormatError(f"{folder} has no meta/info.json: it is not a LeRobot dataset folder")
    info = json.loads(path.read_text())
    version = str(info.get("codebase_version", "?"))
    if version not in SUPPORTED_VERSIONS:
        raise LeRobotFormatError(
            f"{folder} is LeRobot dataset format {version}; readable here: {', '.join(SUPPORTED_VERSIONS)}. Convert "
            "it with lerobot's own converter (lerobot.datasets.v30.convert_dataset_v21_to_v30) first."
        )
    return DatasetInfo(folder, version, float(info["fps"]), info["features"], info)


def is_lerobot_dataset(folder: Path) -> bool:
    return (Path(folder) / "meta" / "info.json").exists()


def resolve_feature_names(info: DatasetInfo, names: FeatureNames | None = None) -> FeatureNames:
    """The given names, checked to exist; else the first known LIBERO naming the dataset has."""
    candidates = [names] if names is not None else list(KNOWN_FEATURE_NAMES.values())
    for candidate in candidates:
        missing = [key for key in candidate.keys() if key not in info.features]
        if not missing:
            check_widths(info, candidate)
            return candidate
    have = ", ".join(sorted(k for k in info.features if k not in ("timestamp", "frame_index", "episode_index",
                                                                   "index", "task_index")))  # fmt: skip
    wanted = f"{', '.join(missing)} (asked for)" if names is not None else "none of the known LIBERO namings"
    raise LeRobotFormatError(
        f"{info.folder}: {wanted} found among its features ({have}). Map them with --lerobot_image_key, "
        "--lerobot_wrist_image_key, --lerobot_state_key and --lerobot_action_key."
    )


def check_widths(info: DatasetInfo, names: FeatureNames) -> None:
    for key, width in ((names.state, STATE_WIDTH), (names.action, ACTION_WIDTH)):
        shape = list(info.features[key].get("shape", []))
        if shape != [width]:
            raise LeRobotFormatError(
                f"{info.folder}: feature {key!r} has shape {shape}; LIBERO needs {width} values "
                f"({'eef position, axis-angle, two gripper fingers' if width == STATE_WIDTH else 'a 7-D action'})"
            )
    for key in (names.image, names.wrist_image):
        if info.features[key]["dtype"] not in ("video", "image"):
            raise LeRobotFormatError(f"{info.folder}: feature {key!r} is {info.features[key]['dtype']}, not a camera")


# --- reading --------------------------------------------------------------------------------------------------------
def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError("Reading LeRobot datasets needs pyarrow: pip install -e '.[lerobot]'") from err
    return pq


def _av():
    try:
        import av
    except ImportError as err:
        raise ImportError(
            "LeRobot datasets store frames as video; decoding needs PyAV: pip install -e '.[lerobot]'"
        ) from err
    return av


def read_tasks(info: DatasetInfo) -> dict[int, str]:
    if info.version == "v3.0":
        table = _pyarrow_parquet().read_table(info.folder / "meta" / "tasks.parquet").to_pandas()
        return {int(row.task_index): str(task) for task, row in table.iterrows()}
    lines = (info.folder / "meta" / "tasks.jsonl").read_text().splitlines()
    return {int(t["task_index"]): t["task"] for t in map(json.loads, filter(None, lines))}


def read_episodes(info: DatasetInfo) -> list[dict]:
    """One dict per episode, in episode order (v3.0: the meta/episodes parquet rows; v2.x: episodes.jsonl)."""
    if info.version == "v3.0":
        pq = _pyarrow_parquet()
        files = sorted((info.folder / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    else:
        rows = [json.loads(line) for line in (info.folder / "meta" / "episodes.jsonl").read_text().splitlines() if line]
    return sorted(rows, key=lambda row: row["episode_index"])


def decode_video(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """(presentation time in seconds, RGB uint8 frame) of every frame, in order."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield float(frame.time), frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as err:
        raise LeRobotFormatError(f"cannot decode {path}: {err}. The video is missing or corrupt.") from err


def _image_from_cell(cell) -> np.ndarray:
    from PIL import Image

    data = cell["bytes"] if isinstance(cell, dict) else cell
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _episode_frames_v3(info: DatasetInfo, key: str, episodes: list[dict]) -> Iterator[np.ndarray]:
    """The (T, H, W, 3) frames of each episode in turn, decoding each shared video file once, front to back."""
    current, frames = None, iter(())
    for episode in episodes:
        where = (episode[f"videos/{key}/chunk_index"], episode[f"videos/{key}/file_index"])
        if where != current:
            current = where
            frames = decode_video(info.path("video_path", video_key=key, chunk_index=where[0], file_index=where[1]))
        start, end, length = (
            episode[f"videos/{key}/from_timestamp"],
            episode[f"videos/{key}/to_timestamp"],
            episode["length"],
        )
        tolerance = 0.5 / info.fps
        picked = []
        for time, frame in frames:
            if time < start - tolerance:
                continue  # an episode this read skips
            picked.append(frame)
            if len(picked) == length or time >= end - 1.5 / info.fps:
                break
        if len(picked) != length:
            raise LeRobotFormatError(
                f"{info.folder}: episode {episode['episode_index']} needs {length} frames of {key} from "
                f"{start:.3f} s, its video holds {len(picked)}: the video is truncated or does not match the metadata"
            )
        yield np.stack(picked)


def _episode_frames_v2(info: DatasetInfo, key: str, episodes: list[dict]) -> Iterator[np.ndarray]:
    chunks = int(info.info.get("chunks_size", 1000))
    for episode in episodes:
        index = episode["episode_index"]
        path = info.path("video_path", video_key=key, episode_chunk=index // chunks, episode_index=index)
        frames = np.stack([frame for _, frame in decode_video(path)])
        if len(frames) < episode["length"]:
            raise LeRobotFormatError(f"{path} holds {len(frames)} frames; episode {index} has {episode['length']} steps")
        yield frames[: episode["length"]]


def _data_rows(info: DatasetInfo, episodes: list[dict]) -> Iterator[dict[str, list]]:
    """Each episode's parquet rows as columns, in episode order."""
    pq = _pyarrow_parquet()
    if info.version == "v3.0":
        current, table = None, None
        for episode in episodes:
            where = (episode["data/chunk_index"], episode["data/file_index"])
            if where != current:
                current = where
                table = pq.read_table(info.path("data_path", chunk_index=where[0], file_index=where[1])).to_pydict()
                by_episode: dict[int, list[int]] = {}
                for row, index in enumerate(table["episode_index"]):
                    by_episode.setdefault(int(index), []).append(row)
            rows = by_episode.get(int(episode["episode_index"]), [])
            yield {column: [values[r] for r in rows] for column, values in table.items()}
    else:
        chunks = int(info.info.get("chunks_size", 1000))
        for episode in episodes:
            index = episode["episode_index"]
            path = info.path("data_path", episode_chunk=index // chunks, episode_index=index)
            yield pq.read_table(path).to_pydict()


def iter_lerobot_episodes(folder: Path, names: FeatureNames | None = None) -> Iterator[tuple[str, Demo]]:
    """(instruction, demo) for every episode of a LeRobot dataset folder, frames turned back to the simulator's
    orientation; episodes stream (one decoded episode per camera in memory)."""
    info = read_info(folder)
    names = resolve_feature_names(info, names)
    tasks, episodes = read_tasks(info), read_episodes(info)
    cameras = []
    for key in (names.image, names.wrist_image):
        if info.features[key]["dtype"] == "video":
            cameras.append((_episode_frames_v3 if info.version == "v3.0" else _episode_frames_v2)(info, key, episodes))
        else:
            cameras.append(None)  # in the parquet rows
    for episode, rows in zip(episodes, _data_rows(info, episodes)):
        if len(rows[names.action]) != episode["length"]:
            raise LeRobotFormatError(
                f"{info.folder}: episode {episode['episode_index']} has {len(rows[names.action])} data rows, "
                f"its metadata says {episode['length']}"
            )
        images = []
        for key, stream in zip((names.image, names.wrist_image), cameras):
            frames = next(stream) if stream is not None else np.stack([_image_from_cell(c) for c in rows[key]])
            images.append(frames[:, ::-1, ::-1])  # upright (LeRobot) -> as rendered (Demo)
        yield tasks[int(rows["task_index"][0])], demo_from_columns(rows[names.state], rows[names.action], images)


def demo_from_columns(state, action, images: list[np.ndarray]) -> Demo:
    state = np.asarray(state, dtype=np.float32).reshape(-1, STATE_WIDTH)
    length = len(state)
    return Demo(
        actions=np.asarray(action, dtype=np.float32).reshape(length, ACTION_WIDTH),
        states=np.zeros((length, 0), np.float32),  # LeRobot datasets carry no simulator state: not replayable
        robot_states=np.zeros((length, 9), np.float32),
        ee_pos=state[:, :3], ee_ori=state[:, 3:6], gripper_states=state[:, 6:8],
        joint_states=np.zeros((length, 7), np.float32),
        images={"agentview_rgb": np.ascontiguousarray(images[0]), "eye_in_hand_rgb": np.ascontiguousarray(images[1])},
    )  # fmt: skip


# --- writing (v3.0) ---------------------------------------------------------------------------------------------------
VIDEO_CODEC = "libsvtav1"  # LeRobot's default encoder (AV1), its default settings below
VIDEO_OPTIONS = {"g": "2", "crf": "30"}


class VideoWriter:
    """Frames appended to one AV1 file; ``time`` is where the next frame lands (the episodes' from/to timestamps)."""

    def __init__(self, path: Path, fps: int, size: tuple[int, int]):
        import os

        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration per file at its default level
        av = _av()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(VIDEO_CODEC, rate=fps, options=VIDEO_OPTIONS)
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = "yuv420p"
        self.fps, self.count, self.av = fps, 0, av

    @property
    def time(self) -> float:
        return self.count / self.fps

    def append(self, frames: np.ndarray) -> None:
        for frame in frames:
            for packet in self.stream.encode(self.av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), "rgb24")):
                self.container.mux(packet)
            self.count += 1

    def close(self) -> dict:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        return {"video.fps": self.fps, "video.codec": "av1", "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                "has_audio": False, "video.height": self.stream.height, "video.width": self.stream.width,
                "video.channels": 3}  # fmt: skip


def _statistics(values: np.ndarray) -> dict[str, list]:
    values = np.asarray(values, dtype=np.float64)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}  # fmt: skip


def write_lerobot_dataset(
    folder: Path,
    episodes: Iterator[tuple[str, Demo]],
    render_quality: str = "full",
    fps: int = LIBERO_FPS,
    names: FeatureNames = FeatureNames(),
) -> dict:
    """Write (instruction, demo) pairs as one LeRobot v3.0 dataset (one data file, one video file per camera: enough
    for LIBERO-sized exports). Built in ``folder.partial`` and renamed into place when complete. ``render_quality``
    (how the frames were rendered) is kept in info.json under "lightvla" and read back by the conversion, so a policy
    trained on the export is evaluated with the same renderer."""
    import pyarrow as pa

    pq = _pyarrow_parquet()
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".partial")
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    cameras = {names.image: "agentview_rgb", names.wrist_image: "eye_in_hand_rgb"}
    videos: dict[str, VideoWriter] = {}
    columns: dict[str, list] = {k: [] for k in (names.state, names.action, "timestamp", "frame_index",
                                                 "episode_index", "index", "task_index")}  # fmt: skip
    tasks: dict[str, int] = {}
    rows, total, size = [], 0, None
    for episode_index, (language, demo) in enumerate(episodes):
        task_index = tasks.setdefault(language, len(tasks))
        length = len(demo)
        size = size or demo.images["agentview_rgb"].shape[1:3]
        row = {"episode_index": episode_index, "tasks": [language], "length": length,
               "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": total, "dataset_to_index": total + length,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}  # fmt: skip
        for key, image_key in cameras.items():
            writer = videos.get(key) or videos.setdefault(
                key, VideoWriter(staging / "videos" / key / "chunk-000" / "file-000.mp4", fps, size)
            )
            row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                        f"videos/{key}/from_timestamp": writer.time})  # fmt: skip
            writer.append(demo.images[image_key][:, ::-1, ::-1])  # as rendered -> upright (LeRobot, RLDS)
            row[f"videos/{key}/to_timestamp"] = writer.time
        state = np.concatenate([demo.ee_pos, demo.ee_ori, demo.gripper_states], axis=1).astype(np.float32)
        columns[names.state] += list(state)
        columns[names.action] += list(np.asarray(demo.actions, np.float32))
        columns["timestamp"] += list(np.arange(length, dtype=np.float32) / fps)
        columns["frame_index"] += list(range(length))
        columns["episode_index"] += [episode_index] * length
        columns["index"] += list(range(total, total + length))
        columns["task_index"] += [task_index] * length
        rows.append(row)
        total += length
    if not rows:
        raise LeRobotFormatError("no episodes to write")
    video_info = {key: writer.close() for key, writer in videos.items()}

    vector = lambda values, width: pa.array([np.asarray(v, np.float32) for v in values],  # noqa: E731
                                            type=pa.list_(pa.float32(), width))  # fmt: skip
    table = pa.table({
        names.state: vector(columns[names.state], STATE_WIDTH),
        names.action: vector(columns[names.action], ACTION_WIDTH),
        "timestamp": pa.array(columns["timestamp"], pa.float32()),
        **{k: pa.array(columns[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
    })  # fmt: skip
    (staging / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(table, staging / "data" / "chunk-000" / "file-000.parquet")
    (staging / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), staging / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    import pandas as pd

    pd.DataFrame({"task_index": list(tasks.values())}, index=list(tasks)).to_parquet(staging / "meta" / "tasks.parquet")
    height, width = size
    features = {
        names.image: {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
                      "info": video_info[names.image]},
        names.wrist_image: {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
                            "info": video_info[names.wrist_image]},
        names.state: {"dtype": "float32", "shape": [STATE_WIDTH], "names": {"motors": [
            "x", "y", "z", "axis_angle1", "axis_angle2", "axis_angle3", "gripper1", "gripper2"]}},
        names.action: {"dtype": "float32", "shape": [ACTION_WIDTH], "names": {"motors": [
            "x", "y", "z", "roll", "pitch", "yaw", "gripper"]}},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in ("frame_index", "episode_index", "index",
                                                                         "task_index")},
    }  # fmt: skip
    info = {
        "codebase_version": "v3.0", "robot_type": "panda", "total_episodes": len(rows), "total_frames": total,
        "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "fps": fps, "splits": {"train": f"0:{len(rows)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features, "lightvla": {"render_quality": render_quality},
    }  # fmt: skip
    (staging / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    stats = {names.state: _statistics(columns[names.state]), names.action: _statistics(columns[names.action])}
    (staging / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    staging.rename(folder)
    return info


# --- training from a LeRobot folder: converted once to LIBERO HDF5, cached ----------------------------------------
def hdf5_copy_folder(folder: Path, names: FeatureNames | None = None) -> Path:
    """Where the HDF5 copy of a LeRobot folder lives: the user's cache, keyed by the folder's files (names, sizes,
    modification times) and the feature mapping, so a changed dataset or mapping is converted again."""
    from prismatic.files import cache_root
    from prismatic.vla.datasets.statistics import fingerprint

    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    return cache_root() / "lerobot_hdf5" / f"{folder.name}-{fingerprint(files, repr(names))}" / folder.name


def ensure_hdf5_copy(folder: Path, names: FeatureNames | None = None) -> Path:
    """The HDF5 copy of a LeRobot folder, converting it on first use (built beside the cache entry and renamed into
    place, so an interrupted conversion is redone, never half read)."""
    import shutil

    from prismatic.vla.datasets.libero_hdf5 import write_task_files

    target = hdf5_copy_folder(folder, names)
    if target.is_dir():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"[data] converting LeRobot dataset {folder} to LIBERO HDF5 once (cached in {target.parent})")
    source = {"source": str(folder), "format": "lerobot", **read_info(folder).info.get("lightvla", {})}
    write_task_files(staging, iter_lerobot_episodes(folder, names), source)
    staging.rename(target)
    return target


def export_hdf5_folder(hdf5_dir: Path, out_dir: Path) -> dict:
    """Every demo of a folder of LIBERO HDF5 task files (ours, regenerated or converted) as one LeRobot v3.0 dataset;
    the frames' renderer goes along (``write_lerobot_dataset``)."""
    from prismatic.vla.datasets import libero_hdf5

    files = libero_hdf5.list_demo_files(hdf5_dir)
    if not files:
        raise LeRobotFormatError(f"{hdf5_dir} holds no LIBERO HDF5 task files to export")
    with libero_hdf5._h5py().File(files[0], "r") as f:
        render_quality = libero_hdf5.read_render_quality(f)

    def episodes() -> Iterator[tuple[str, Demo]]:
        for path in files:
            with libero_hdf5._h5py().File(path, "r") as f:
                if libero_hdf5.read_render_quality(f) != render_quality:
                    raise LeRobotFormatError(f"{hdf5_dir} mixes renderers ({path.name}): export them apart")
                language = libero_hdf5.read_language(f)
                for name in libero_hdf5.demo_names(f):
                    yield language, libero_hdf5.read_demo(f, name)

    return write_lerobot_dataset(out_dir, episodes(), render_quality)
