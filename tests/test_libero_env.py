"""The real LIBERO simulator through experiments/robot/libero/libero_utils.py (headless, software rendering)."""

import numpy as np
import pytest

from experiments.robot.libero import libero_utils as lu


@pytest.mark.slow
@pytest.mark.parametrize("suite", lu.TASK_SUITES)
def test_first_task_of_every_suite_steps_and_is_not_solved_at_start(suite):
    task = lu.get_task(suite, 0)
    assert task.language and task.max_steps == lu.TASK_MAX_STEPS[suite]
    env = lu.make_env(task, resolution=64, cameras=True)
    try:
        env.reset()
        obs = env.set_init_state(lu.get_initial_states(suite, 0)[0])
        assert not env.check_success()
        start = np.array(obs["robot0_eef_pos"])
        for _ in range(5):
            obs, _, done, _ = env.step([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0])  # move up
        assert not done
        assert obs["robot0_eef_pos"][2] > start[2] + 0.01
        policy_obs = lu.policy_observation(obs)
        assert policy_obs["full_image"].shape == policy_obs["wrist_image"].shape == (64, 64, 3)
        assert policy_obs["full_image"].dtype == np.uint8
        np.testing.assert_array_equal(policy_obs["full_image"], obs["agentview_image"][::-1, ::-1])
        assert policy_obs["state"].shape == (8,)
        np.testing.assert_allclose(policy_obs["state"][:3], obs["robot0_eef_pos"], atol=1e-6)
    finally:
        lu.close_env(env)


def test_official_initial_states_are_provided():
    states = lu.get_initial_states("libero_spatial", 0)
    assert states.shape[0] == 50 and states.ndim == 2


def test_quat2axisangle_matches_robosuite():
    from robosuite.utils.transform_utils import quat2axisangle

    rng = np.random.default_rng(0)
    for quat in [*rng.normal(size=(20, 4)), np.array([0.0, 0.0, 0.0, 1.0])]:
        quat = quat / np.linalg.norm(quat)
        np.testing.assert_allclose(lu.quat2axisangle(quat), quat2axisangle(quat), atol=1e-6)


def test_noop_rule():
    still_open = np.array([0, 0, 0, 0, 0, 0, -1.0])
    assert lu.is_noop(still_open, None)
    assert lu.is_noop(still_open, still_open)
    assert not lu.is_noop(still_open, np.array([0, 0, 0, 0, 0, 0, 1.0]))  # the gripper changes
    assert not lu.is_noop(np.array([0.01, 0, 0, 0, 0, 0, -1.0]), still_open)


def test_bad_suite_and_task_id_are_explained():
    with pytest.raises(ValueError, match="Unknown LIBERO task suite 'libero_foo'.*libero_spatial"):
        lu.get_task("libero_foo", 0)
    with pytest.raises(ValueError, match="tasks 0..9"):
        lu.get_task("libero_object", 10)


@pytest.mark.slow
def test_torchvision_can_be_imported_after_rendering():
    """Regression: importing torchvision (and with it triton's LLVM) after Mesa rendered used to segfault."""
    import subprocess
    import sys

    script = (
        "from experiments.robot.libero import libero_utils as lu\n"
        "env = lu.make_env(lu.get_task('libero_object', 0), resolution=32)\n"
        "env.reset(); env.step([0, 0, 0, 0, 0, 0, -1])\n"
        "import torchvision, prismatic.policy.inference\n"
        "lu.close_env(env); print('survived')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr[-2000:]


def test_each_model_is_compiled_once_and_every_sim_gets_its_own_copy(monkeypatch):
    """robosuite recompiles the same XML at every reset; after compile_each_model_once a process compiles it once,
    and every MjSim simulates a copy (robosuite edits its model at run time: the cached one must not change)."""
    lu._libero()  # LLVM load order (torchvision before mujoco's GL), as make_env does
    import mujoco
    from robosuite.utils import binding_utils

    monkeypatch.setattr(binding_utils.MjSim, "from_xml_string", binding_utils.MjSim.from_xml_string)  # restored after
    monkeypatch.setattr(lu, "_COMPILED", {})
    compiled = []
    real = mujoco.MjModel.from_xml_string
    monkeypatch.setattr(mujoco.MjModel, "from_xml_string", lambda xml: compiled.append(xml) or real(xml))
    lu.compile_each_model_once()
    lu.compile_each_model_once()  # idempotent: not wrapped twice
    xml = '<mujoco><worldbody><body><freejoint/><geom size="0.1" rgba="1 0 0 1"/></body></worldbody></mujoco>'
    first = binding_utils.MjSim.from_xml_string(xml)
    first.model._model.geom_rgba[0] = [0, 1, 0, 1]  # what robosuite does to hide its sites
    second = binding_utils.MjSim.from_xml_string(xml)
    assert len(compiled) == 1
    assert second.model._model is not first.model._model
    np.testing.assert_array_equal(second.model._model.geom_rgba[0], [1, 0, 0, 1])
    mujoco.mj_step(first.model._model, first.data._data)
    mujoco.mj_step(second.model._model, second.data._data)
    np.testing.assert_array_equal(first.data.qpos, second.data.qpos)
    other = '<mujoco><worldbody><geom size="0.2"/></worldbody></mujoco>'
    for _ in range(lu.MAX_COMPILED + 1):  # a bounded cache: the oldest model goes
        binding_utils.MjSim.from_xml_string(other if _ % 2 else xml.replace("0.1", f"0.{_ + 2}"))
    assert len(lu._COMPILED) == lu.MAX_COMPILED


def test_a_fast_env_compiles_only_the_fast_model_and_its_resets_skip_old_objects(monkeypatch, tmp_path):
    """robosuite's constructor builds a first model before a processor can be set: under fast renders it must already
    be the fast one (one compile, of simplified meshes, for the constructor and every reset). The env freezes what
    exists for robosuite's gc.collect at each reset, and closing it gives that back."""
    import gc

    monkeypatch.setenv("LIGHTVLA_CACHE", str(tmp_path / "cache"))
    lu._libero()
    import mujoco
    from robosuite.utils import binding_utils

    monkeypatch.setattr(binding_utils.MjSim, "from_xml_string", binding_utils.MjSim.from_xml_string)  # restored after
    monkeypatch.setattr(lu, "_COMPILED", {})
    compiled = []
    real = mujoco.MjModel.from_xml_string
    monkeypatch.setattr(mujoco.MjModel, "from_xml_string", lambda xml: compiled.append(xml) or real(xml))
    env = lu.make_env(lu.get_task("libero_object", 0), resolution=64, render_quality="fast")
    try:
        assert gc.get_freeze_count() > 0
        env.reset()
        env.reset()
        assert len(compiled) == 1 and "__fast" in compiled[0]
    finally:
        lu.close_env(env)
    assert gc.get_freeze_count() == 0
