"""The scripted expert in real rollouts, and the demonstration files it produces."""

import h5py
import numpy as np
import pytest

from experiments.robot.libero import libero_utils as lu
from experiments.robot.libero.generate_scripted_demos import GenerateDemosConfig, executed_action, generate_task, rollout
from experiments.robot.libero.regenerate_libero_dataset import RegenerateConfig, regenerate_task, replay_demo
from experiments.robot.libero.scripted_expert import (
    CLOSE,
    MAX_GRIPPER_SPAN,
    ExpertConfig,
    Phase,
    ScriptedExpert,
    UnsupportedTask,
    goal_subtasks,
    grasp_candidates,
)
from prismatic.vla.datasets import libero_hdf5

TASK_FILE = "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"


@pytest.fixture(scope="module")
def object_env():
    env = lu.make_env(lu.get_task("libero_object", 3), cameras=False)
    yield env
    lu.close_env(env)


@pytest.mark.slow
def test_expert_succeeds_on_a_libero_object_task(object_env):
    success, record = rollout(object_env, ScriptedExpert(), lu.TASK_MAX_STEPS["libero_object"], seed=123)
    assert success
    assert object_env.check_success()
    actions = np.asarray(record["actions"])
    assert actions.shape[1] == 7 and np.abs(actions).max() <= 1.0
    assert set(np.unique(actions[:, -1])) == {-1.0, 1.0}  # it opened and closed the gripper


@pytest.mark.slow
def test_expert_refuses_tasks_it_cannot_script():
    env = lu.make_env(lu.get_task("libero_goal", 0), cameras=False)  # "open the middle drawer of the cabinet"
    try:
        with pytest.raises(UnsupportedTask, match="open"):
            goal_subtasks(env)
    finally:
        lu.close_env(env)


@pytest.mark.slow
def test_generated_file_has_the_libero_layout(scripted_demo_root):
    path = scripted_demo_root / "libero_object_no_noops" / TASK_FILE
    assert not list(path.parent.glob("*.partial"))
    with h5py.File(path, "r") as f:
        assert libero_hdf5.demo_names(f) == ["demo_0", "demo_1"]
        assert libero_hdf5.read_language(f) == "pick up the alphabet soup and place it in the basket"
        assert f["data"].attrs["num_demos"] == 2
        demo = f["data/demo_0"]
        steps = demo.attrs["num_samples"]
        expected = {
            "actions": ((steps, 7), np.floating),
            "states": ((steps, None), np.floating),
            "robot_states": ((steps, 9), np.floating),
            "dones": ((steps,), np.uint8),
            "obs/agentview_rgb": ((steps, 64, 64, 3), np.uint8),
            "obs/eye_in_hand_rgb": ((steps, 64, 64, 3), np.uint8),
            "obs/ee_pos": ((steps, 3), np.floating),
            "obs/ee_ori": ((steps, 3), np.floating),
            "obs/ee_states": ((steps, 6), np.floating),
            "obs/gripper_states": ((steps, 2), np.floating),
            "obs/joint_states": ((steps, 7), np.floating),
        }
        for key, (shape, dtype) in expected.items():
            assert np.issubdtype(demo[key].dtype, dtype), key
            assert all(a == b for a, b in zip(demo[key].shape, shape) if b is not None), (key, demo[key].shape)
        assert demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
        # the release is recorded to its end, not cut where LIBERO first reports success: a policy must see the
        # fingers open for more than a couple of frames to learn when to let go
        for name in ("demo_0", "demo_1"):
            gripper = f[f"data/{name}/actions"][:, -1]
            last_close = np.flatnonzero(gripper == CLOSE)[-1]
            assert len(gripper) - 1 - last_close >= ExpertConfig().grip_steps, name
        assert demo["obs/agentview_rgb"][0].std() > 5  # a real rendering, not a blank frame
        # the arm starts in a different pose in each demo, as in the official initial states (flattened sim state:
        # time, then qpos with the 7 arm joints first)
        first_joints = [f[f"data/{name}/states"][0][1:8] for name in ("demo_0", "demo_1")]
        assert 0.005 < np.abs(first_joints[0] - first_joints[1]).max() < 0.2


@pytest.mark.slow
def test_stored_frames_are_what_the_evaluation_env_renders(scripted_demo_root):
    """Training images must look like evaluation images: same scene, no visualisation sites (robosuite draws the
    gripper's green grip line until the env is reset), same cameras."""
    with h5py.File(scripted_demo_root / "libero_object_no_noops" / TASK_FILE, "r") as f:
        demo = libero_hdf5.read_demo(f, "demo_0")
        quality = libero_hdf5.read_render_quality(f)
    assert quality in ("full", "fast")  # recorded in the file; evaluation renders the same way
    env = lu.make_env(lu.get_task("libero_object", 0), resolution=64, cameras=True, render_quality=quality)
    try:
        env.reset()
        for step in (0, len(demo) // 2):
            obs = env.set_init_state(demo.states[step])
            for key, camera in (("agentview_rgb", "agentview"), ("eye_in_hand_rgb", "wrist")):
                rendered = obs[lu.CAMERA_KEYS[camera]].astype(int)
                assert np.abs(rendered - demo.images[key][step]).max() == 0, (step, key)
    finally:
        lu.close_env(env)


@pytest.mark.slow
def test_stored_demo_replays_to_success(scripted_demo_root):
    env = lu.make_env(lu.get_task("libero_object", 0), cameras=False)
    try:
        with h5py.File(scripted_demo_root / "libero_object_no_noops" / TASK_FILE, "r") as f:
            demo = libero_hdf5.read_demo(f, "demo_1", with_images=False)
        success, replayed = replay_demo(env, demo, render=False)
        assert success
        assert len(replayed) == len(demo)  # the expert never idles: nothing is dropped as a no-op
        np.testing.assert_allclose(replayed.actions, demo.actions)
    finally:
        lu.close_env(env)


@pytest.mark.slow
def test_parallel_attempts_write_the_same_file(scripted_demo_root, tmp_path):
    """Attempts spread over 2 processes come back in attempt order: the same demos as the sequential fixture."""
    cfg = GenerateDemosConfig(num_demos_per_task=2, out_dir=tmp_path / "libero_object_no_noops", resolution=64,
                              num_workers=2)  # fmt: skip
    report = generate_task(cfg, 0, show_progress=True)
    assert report.successes == 2
    with (
        h5py.File(scripted_demo_root / "libero_object_no_noops" / TASK_FILE, "r") as sequential,
        h5py.File(tmp_path / "libero_object_no_noops" / TASK_FILE, "r") as parallel,
    ):
        for name in ("demo_0", "demo_1"):
            a, b = libero_hdf5.read_demo(sequential, name), libero_hdf5.read_demo(parallel, name)
            np.testing.assert_array_equal(a.actions, b.actions)
            np.testing.assert_array_equal(a.images["agentview_rgb"], b.images["agentview_rgb"])


@pytest.mark.slow
def test_generation_resumes_instead_of_redoing(scripted_demo_root):
    cfg = GenerateDemosConfig(num_demos_per_task=2, out_dir=scripted_demo_root / "libero_object_no_noops")
    report = generate_task(cfg, 0, show_progress=False)
    assert report.skipped.startswith("already has 2 demos") and report.attempts == 0


@pytest.mark.slow
def test_regeneration_replays_and_rerenders(scripted_demo_root, tmp_path):
    cfg = RegenerateConfig(
        libero_task_suite="libero_object",
        libero_raw_data_dir=scripted_demo_root / "libero_object_no_noops",
        libero_target_dir=tmp_path,
        resolution=32,
    )
    metainfo = {}
    kept, total = regenerate_task(cfg, lu.get_task("libero_object", 0), metainfo)
    assert (kept, total) == (2, 2)
    info = metainfo["pick_up_the_alphabet_soup_and_place_it_in_the_basket"]
    assert info["demo_0"]["success"] and len(info["demo_0"]["initial_state"]) > 10
    with h5py.File(tmp_path / TASK_FILE, "r") as f:
        assert f["data/demo_0/obs/agentview_rgb"].shape[1:] == (32, 32, 3)


def test_regeneration_needs_the_raw_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="libero_raw_data_dir"):
        RegenerateConfig(libero_raw_data_dir=tmp_path / "missing")


def test_grasp_candidates():
    # a can: centre grasp below its top, fingers along y first, then turned
    can = grasp_candidates(np.array([0.0, 0.0, 0.0]), np.array([0.06, 0.06, 0.1]))
    assert [yaw for _, yaw in can] == [0.0, np.pi / 2]
    np.testing.assert_allclose(can[0][0], [0.03, 0.03, 0.07])
    # a box long in y: only the turned hand fits across its narrow side
    box = grasp_candidates(np.array([0.0, 0.0, 0.0]), np.array([0.04, 0.12, 0.03]))
    assert [yaw for _, yaw in box] == [np.pi / 2]
    assert box[0][0][2] == pytest.approx(0.015)
    # a bowl wider than the open gripper: four rim grasps, each just inside one side, fingers across that side
    low, high = np.array([0.0, 0.0, 0.9]), np.array([0.12, 0.12, 0.95])
    rim = grasp_candidates(low, high)
    assert len(rim) == 4
    for point, yaw in rim:
        axis = 1 if yaw == 0.0 else 0
        assert min(abs(point[axis] - low[axis]), abs(point[axis] - high[axis])) < 0.03
        assert low[2] < point[2] < high[2]
    # the switch from centre to rim grasps happens at the gripper's span, whichever way the object is turned
    for width in (MAX_GRIPPER_SPAN - 0.002, MAX_GRIPPER_SPAN + 0.002):
        square = grasp_candidates(np.zeros(3), np.array([width, width, 0.05]))
        centred = all(np.allclose(point[:2], width / 2) for point, _ in square)
        assert centred == (width < MAX_GRIPPER_SPAN) and len(square) == (2 if centred else 4)


def test_demo_noise_moves_only_the_executed_translation():
    action = np.array([0.5, -0.95, 0.0, 0.1, 0.2, 0.3, 1.0])
    assert executed_action(action, np.random.default_rng(0), 0.0) is action  # no noise: the expert's own path
    noisy = executed_action(action, np.random.default_rng(0), 0.2)
    expected = action.copy()
    expected[:3] = np.clip(action[:3] + np.random.default_rng(0).normal(0.0, 0.2, 3), -1.0, 1.0)
    np.testing.assert_array_equal(noisy, expected)
    assert not np.array_equal(noisy[:3], action[:3]) and np.abs(noisy).max() <= 1.0
    np.testing.assert_array_equal(noisy[3:], action[3:])  # rotation and gripper as the expert said
    assert action[0] == 0.5  # the recorded label is not touched
    with pytest.raises(ValueError, match="action_noise"):
        GenerateDemosConfig(action_noise=-0.1)


def test_lowering_lets_go_once_the_object_stops_getting_closer():
    """The hand approaches the release point 2 mm a step, then rests 1 cm short of it (the bowl on the plate's rim):
    stalled exactly `stall_steps` steps after the last real progress, never while it was still coming closer."""
    expert, target = ScriptedExpert(), np.array([0.0, 0.0, 0.0])
    expert._advance(Phase.LOWER)
    heights = [0.03 - 0.002 * k for k in range(11)] + [0.01] * 8  # reaches 1 cm at step 10, then stays
    stalled = [expert._stalled(np.array([0.0, 0.0, z]), target) for z in heights]
    n = ExpertConfig().stall_steps
    assert stalled.index(True) == 10 + n and not any(stalled[: 10 + n])
