"""LeRobot datasets (prismatic/vla/datasets/lerobot_format.py): our v3.0 export read back, a v2.0 dataset with images
inside the parquet files (openpi's layout) read, the frames' orientation checked on the real simulator, training from a
LeRobot folder, and the errors."""

import io
import json

import numpy as np
import pytest
from conftest import synthetic_demo

from prismatic.vla.datasets import lerobot_format as lf
from prismatic.vla.datasets.libero_hdf5 import Demo


def smooth_demo(length: int, seed: int, size: int = 64) -> Demo:
    """A synthetic demo whose frames are smooth gradients (video codecs keep those; random pixels they do not)."""
    demo = synthetic_demo(length, seed, size)
    y, x = np.mgrid[0:size, 0:size]
    for key in demo.images:
        demo.images[key] = np.stack([
            np.stack([(x * 3 + t * 5 + seed * 40) % 256, (y * 3 + seed * 20) % 256, (x + y + t) % 256], -1)
            for t in range(length)
        ]).astype(np.uint8)  # fmt: skip
    return demo


def state_of(demo: Demo) -> np.ndarray:
    return np.concatenate([demo.ee_pos, demo.ee_ori, demo.gripper_states], axis=1).astype(np.float32)


def test_our_v3_export_reads_back(tmp_path):
    demos = [("pick up the soup", smooth_demo(12, 1)), ("pick up the milk", smooth_demo(9, 2)),
             ("pick up the soup", smooth_demo(10, 3))]  # fmt: skip
    info = lf.write_lerobot_dataset(tmp_path / "ds", iter(demos), render_quality="fast")
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 31
    assert info["total_tasks"] == 2 and info["lightvla"] == {"render_quality": "fast"}
    assert not (tmp_path / "ds.partial").exists()
    back = list(lf.iter_lerobot_episodes(tmp_path / "ds"))
    assert [language for language, _ in back] == [language for language, _ in demos]
    for (_, got), (_, sent) in zip(back, demos):
        np.testing.assert_array_equal(got.actions, sent.actions.astype(np.float32))
        np.testing.assert_array_equal(state_of(got), state_of(sent))
        for key in ("agentview_rgb", "eye_in_hand_rgb"):
            assert got.images[key].shape == sent.images[key].shape
            error = np.abs(got.images[key].astype(int) - sent.images[key].astype(int)).mean()
            turned = np.abs(got.images[key][:, ::-1, ::-1].astype(int) - sent.images[key].astype(int)).mean()
            assert error < 3 < turned, (error, turned)  # AV1 is lossy, but the frames come back the right way up


def png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def write_openpi_v2(folder, demos: list[tuple[str, Demo]]) -> None:
    """A v2.0 dataset as openpi's physical-intelligence/libero is laid out: images inside the parquet files (upright,
    as upstream's RLDS release), features image / wrist_image / state / actions, one parquet file per episode."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks = {language: i for i, language in enumerate(dict.fromkeys(language for language, _ in demos))}
    (folder / "meta").mkdir(parents=True)
    image = {"dtype": "image", "shape": [64, 64, 3], "names": ["height", "width", "channel"]}
    info = {
        "codebase_version": "v2.0", "fps": 10, "chunks_size": 1000, "total_episodes": len(demos),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet", "video_path": None,
        "features": {"image": image, "wrist_image": image, "state": {"dtype": "float32", "shape": [8]},
                     "actions": {"dtype": "float32", "shape": [7]}},
    }  # fmt: skip
    (folder / "meta" / "info.json").write_text(json.dumps(info))
    (folder / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                         for t, i in tasks.items()))  # fmt: skip
    (folder / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": [language], "length": len(demo)}) + "\n"
        for e, (language, demo) in enumerate(demos)
    ))  # fmt: skip
    for e, (language, demo) in enumerate(demos):
        upright = {key: demo.images[key][:, ::-1, ::-1] for key in demo.images}
        table = pa.table({
            "image": [{"bytes": png(f), "path": None} for f in upright["agentview_rgb"]],
            "wrist_image": [{"bytes": png(f), "path": None} for f in upright["eye_in_hand_rgb"]],
            "state": [list(s) for s in state_of(demo)], "actions": [list(a) for a in demo.actions],
            "episode_index": [e] * len(demo), "task_index": [tasks[language]] * len(demo),
        })  # fmt: skip
        (folder / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "data" / "chunk-000" / f"episode_{e:06d}.parquet")


def test_openpi_v2_images_in_parquet_read_exactly(tmp_path):
    demos = [("put the bowl on the plate", synthetic_demo(6, 4, 64)), ("open the drawer", synthetic_demo(5, 5, 64))]
    write_openpi_v2(tmp_path / "openpi", demos)
    info = lf.read_info(tmp_path / "openpi")
    assert lf.resolve_feature_names(info) == lf.KNOWN_FEATURE_NAMES["physical-intelligence/libero"]
    back = list(lf.iter_lerobot_episodes(tmp_path / "openpi"))
    assert [language for language, _ in back] == [language for language, _ in demos]
    for (_, got), (_, sent) in zip(back, demos):
        for key in sent.images:  # PNG is lossless: exactly the frames, turned back to the simulator's orientation
            np.testing.assert_array_equal(got.images[key], sent.images[key])
        np.testing.assert_allclose(got.actions, sent.actions, rtol=1e-6)


def test_frames_face_the_way_evaluation_shows_them(tmp_path):
    """On real simulator frames: a demo stored as rendered, exported, is upright in the LeRobot video (as LeRobot's
    LIBERO data and upstream's RLDS hold it) and equals what evaluation hands the policy; read back, it is as
    rendered again, which is what the training data pipeline expects."""
    from experiments.robot.libero import libero_utils as lu

    env = lu.make_env(lu.get_task("libero_object", 0), resolution=64, render_quality="fast")
    try:
        obs = env.reset()
        raw = [obs["agentview_image"]]
        for _ in range(3):
            obs, *_ = env.step(np.zeros(7))
            raw.append(obs["agentview_image"])
        shown = [lu.get_libero_image(o) for o in [obs]]  # evaluation's view of the last frame
    finally:
        lu.close_env(env)
    demo = smooth_demo(len(raw), 1)
    demo.images["agentview_rgb"] = np.stack(raw)
    lf.write_lerobot_dataset(tmp_path / "ds", iter([("pick up the soup", demo)]))
    video = tmp_path / "ds" / "videos" / "observation.images.image" / "chunk-000" / "file-000.mp4"
    frames = [frame for _, frame in lf.decode_video(video)]
    error = np.abs(frames[-1].astype(int) - shown[-1].astype(int)).mean()
    turned = np.abs(frames[-1][::-1, ::-1].astype(int) - shown[-1].astype(int)).mean()
    assert error < 4 < turned, (error, turned)
    [(_, back)] = lf.iter_lerobot_episodes(tmp_path / "ds")
    assert np.abs(back.images["agentview_rgb"].astype(int) - np.stack(raw).astype(int)).mean() < 4


def test_training_reads_a_lerobot_folder_once_converted(tmp_path, monkeypatch):
    from conftest import finetune_config

    from prismatic.training.trainer import train

    monkeypatch.setenv("LIGHTVLA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("prismatic.vla.datasets.statistics.CACHE_DIR", tmp_path / "cache")
    demos = [("pick up the soup", smooth_demo(20, 1, 32)), ("pick up the milk", smooth_demo(22, 2, 32))]
    lf.write_lerobot_dataset(tmp_path / "data" / "libero_export", iter(demos), render_quality="fast")
    cfg = finetune_config(tmp_path / "data", tmp_path, dataset_name="libero_export", max_steps=2, save_freq=2,
                         save_latest_checkpoint_only=True)  # fmt: skip
    result = train(cfg)
    copies = list((tmp_path / "cache" / "lerobot_hdf5").glob("*/libero_export"))
    assert len(copies) == 1 and len(list(copies[0].glob("*_demo.hdf5"))) == 2
    saved = json.loads((result["run_dir"] / "config.json").read_text())
    assert saved["render_quality"] == "fast"  # evaluation renders as the exported frames were
    statistics = json.loads((result["run_dir"] / "dataset_statistics.json").read_text())["libero_export"]
    actions = np.concatenate([d.actions for _, d in demos])[:, :6]
    np.testing.assert_allclose(statistics["action"]["q99"][:6], np.quantile(actions, 0.99, axis=0), rtol=1e-5)
    mtime = copies[0].stat().st_mtime_ns
    train(finetune_config(tmp_path / "data", tmp_path, dataset_name="libero_export", max_steps=1, run_id_note="b"))
    assert copies[0].stat().st_mtime_ns == mtime  # converted once


def test_bad_datasets_are_explained(tmp_path):
    lf.write_lerobot_dataset(tmp_path / "ds", iter([("pick up the soup", smooth_demo(4, 1))]))
    info_path = tmp_path / "ds" / "meta" / "info.json"
    info = json.loads(info_path.read_text())

    with pytest.raises(lf.LeRobotFormatError, match="no meta/info.json"):
        lf.read_info(tmp_path)
    info_path.write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(lf.LeRobotFormatError, match="format v1.6; readable here: v2.0, v2.1, v3.0"):
        lf.read_info(tmp_path / "ds")
    renamed = {("observation.images.front" if k == "observation.images.image" else k): v
               for k, v in info["features"].items()}  # fmt: skip
    info_path.write_text(json.dumps({**info, "features": renamed}))
    with pytest.raises(lf.LeRobotFormatError, match=r"observation.images.front.*--lerobot_image_key"):
        list(lf.iter_lerobot_episodes(tmp_path / "ds"))
    wide = {**info["features"], "observation.state": {"dtype": "float32", "shape": [9]}}
    info_path.write_text(json.dumps({**info, "features": wide}))
    with pytest.raises(lf.LeRobotFormatError, match=r"'observation.state' has shape \[9\]; LIBERO needs 8"):
        list(lf.iter_lerobot_episodes(tmp_path / "ds"))
    info_path.write_text(json.dumps(info))
    (tmp_path / "ds" / "videos" / "observation.images.image2" / "chunk-000" / "file-000.mp4").write_bytes(b"junk")
    with pytest.raises(lf.LeRobotFormatError, match="cannot decode .*file-000.mp4"):
        list(lf.iter_lerobot_episodes(tmp_path / "ds"))


def test_export_script_on_real_scripted_demos(scripted_demo_root, tmp_path):
    """experiments/robot/libero/export_lerobot.py on demos the scripted expert made in the simulator."""
    from conftest import UNNORM_KEY

    from experiments.robot.libero.export_lerobot import ExportLeRobotConfig, main
    from prismatic.vla.datasets import libero_hdf5

    info = main.__wrapped__(ExportLeRobotConfig(hdf5_dir=scripted_demo_root / UNNORM_KEY, out_dir=tmp_path / "ds"))
    [path] = libero_hdf5.list_demo_files(scripted_demo_root / UNNORM_KEY)
    with libero_hdf5._h5py().File(path, "r") as f:
        language = libero_hdf5.read_language(f)
        sent = [libero_hdf5.read_demo(f, name) for name in libero_hdf5.demo_names(f)]
    assert info["total_episodes"] == len(sent) == 2 and info["lightvla"] == {"render_quality": "fast"}
    back = list(lf.iter_lerobot_episodes(tmp_path / "ds"))
    assert [b[0] for b in back] == [language] * 2
    for (_, got), demo in zip(back, sent):
        np.testing.assert_array_equal(got.actions, demo.actions.astype(np.float32))
        for key in demo.images:
            assert np.abs(got.images[key].astype(int) - demo.images[key].astype(int)).mean() < 4


def test_a_dataset_the_real_lerobot_library_wrote():
    """tests/fixtures/lerobot-v3.0: written by lerobot 0.4.4 (LeRobotDataset.create / add_frame / save_episode), with
    the arrays it was given; our reader gets them back (frames through AV1, turned to the renders' orientation)."""
    from conftest import FIXTURES

    folder = FIXTURES / "lerobot-v3.0"
    expected = np.load(folder / "expected.npz")
    episodes = list(lf.iter_lerobot_episodes(folder))
    assert [language for language, _ in episodes] == [
        "pick up the alphabet soup and place it in the basket", "pick up the milk and place it in the basket"
    ]  # fmt: skip
    for e, (_, demo) in enumerate(episodes):
        np.testing.assert_array_equal(demo.actions, expected[f"action_{e}"])
        np.testing.assert_array_equal(state_of(demo), expected[f"state_{e}"])
        for key, name in (("agentview_rgb", "image"), ("eye_in_hand_rgb", "image2")):
            upright = demo.images[key][:, ::-1, ::-1].astype(int)
            assert np.abs(upright - expected[f"{name}_{e}"].astype(int)).mean() < 4
