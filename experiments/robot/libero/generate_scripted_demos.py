"""Make LIBERO demonstrations with the scripted expert, written as LIBERO HDF5 files (one per task).

    python experiments/robot/libero/generate_scripted_demos.py --task_suite_name libero_object \
        --num_demos_per_task 20 --out_dir datasets/libero/libero_object_no_noops

Each attempt starts from a fresh layout (`env.seed(k); env.reset()`, never the 50 evaluation initial states) with
the arm joints perturbed as in the official initial states (LIBERO's reset alone always starts the arm in the same
pose), is rolled out without cameras (fast), and only if it succeeds are both camera images re-rendered from the saved
simulator states. Finished task files are kept: running the command again only makes what is missing.
`--lerobot_out_dir DIR` also writes the demos as a LeRobot v3.0 dataset (`export_lerobot.py` does it afterwards).
"""

import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from pathlib import Path

import draccus
import numpy as np
from tqdm import tqdm

from experiments.robot.libero import libero_utils as lu
from experiments.robot.libero.scripted_expert import ScriptedExpert, UnsupportedTask, goal_subtasks
from experiments.robot.libero.visual_meshes import check_render_quality
from prismatic.vla.datasets import libero_hdf5


@dataclass
class GenerateDemosConfig:
    task_suite_name: str = "libero_object"  # libero_spatial | libero_object | libero_goal | libero_10 | libero_90
    num_demos_per_task: int = 10
    out_dir: Path | None = None  # default: datasets/libero/{task_suite_name}_no_noops
    task_ids: list[int] | None = None  # default: every task the expert supports
    resolution: int = 256  # camera size, as upstream's regenerated datasets
    max_attempts_per_demo: int = 3  # at most num_demos_per_task * this many layouts per task
    give_up_after: int = 10  # stop a task whose first this-many attempts all fail (the expert cannot do it)
    seed: int = 0  # layouts come from env.seed(seed * 100_000 + task_id * 1_000 + attempt)
    num_workers: int = 1  # processes (each holds two simulators, ~2 GB): tasks, or one task's attempts, in parallel
    overwrite: bool = False
    render_quality: str = "fast"  # fast: decimated visual meshes, no multisampling (cheaper frames, same physics)
    # | full: LIBERO's meshes as shipped (what released checkpoints saw)
    action_noise: float = 0.0  # sd of Gaussian noise on the executed arm translation (DART); labels stay the
    # expert's clean actions, so the demos show how to come back from small drifts (0: the expert's own path)
    lerobot_out_dir: Path | None = None  # also write every demo of out_dir as a LeRobot v3.0 dataset here

    def __post_init__(self):
        lu.check_suite_name(self.task_suite_name)
        if self.out_dir is None:
            self.out_dir = Path("datasets/libero") / f"{self.task_suite_name}_no_noops"
        if self.num_demos_per_task < 1:
            raise ValueError("--num_demos_per_task must be at least 1.")
        if not 0.0 <= self.action_noise < 1.0:
            raise ValueError(f"--action_noise is a standard deviation in action units, in [0, 1): {self.action_noise}")
        check_render_quality(self.render_quality)


@dataclass
class TaskReport:
    task_id: int
    language: str
    successes: int = 0
    attempts: int = 0
    seconds: float = 0.0
    mean_length: float = 0.0
    skipped: str = ""  # why nothing was generated (unsupported, already done)


def rollout(
    env, expert: ScriptedExpert, max_steps: int, seed: int, action_noise: float = 0.0
) -> tuple[bool, dict[str, list]]:
    """One expert episode on a fresh layout, without cameras. Returns success and the per-step record, whose actions
    are the expert's; with `action_noise` the arm executes them with N(0, action_noise) added to the translation
    except while placing (Laskey et al.'s DART: the closed-loop expert's labels then include the way back from where
    the noise led, e.g. a second grasp after a missed one)."""
    env.seed(seed)
    env.reset()
    lu.perturb_arm(env, np.random.default_rng(seed))  # start poses spread like the official initial states'
    noise_rng = np.random.default_rng([seed, 1])
    obs = lu.settle(env)
    expert.reset(env, obs)
    record: dict[str, list] = {"actions": [], "states": []}
    for _ in range(max_steps):
        action = expert.act(obs)
        record["states"].append(env.get_sim_state())
        for key, value in lu.robot_record(obs).items():
            record.setdefault(key, []).append(value)
        record["actions"].append(action)
        noise = 0.0 if expert.placing else action_noise  # the release stays where the expert puts it
        obs, _, done, _ = env.step(executed_action(action, noise_rng, noise).tolist())
        # LIBERO reports success as soon as the object touches its target, often 2-3 steps after the fingers start
        # to open; stopping there leaves the policy almost no frames that say "open here" (a policy trained on such
        # demos hovers over the plate holding the bowl), so the release is always recorded to its end
        if done and not expert.placing:
            return True, record
    return False, record


def executed_action(action: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The expert's action with N(0, noise) on the translation, kept inside the action range."""
    if noise == 0.0:
        return action
    noisy = action.copy()
    noisy[:3] = np.clip(noisy[:3] + rng.normal(0.0, noise, 3), -1.0, 1.0)
    return noisy


def render_demo(camera_env, record: dict[str, list]) -> libero_hdf5.Demo:
    """Turn a successful record into a Demo with both camera images re-rendered from its simulator states."""
    frames: dict[str, list] = {key: [] for key in libero_hdf5.IMAGE_KEYS}
    for state in record["states"]:
        obs = camera_env.regenerate_obs_from_state(state)
        frames["agentview_rgb"].append(obs[lu.CAMERA_KEYS["agentview"]])
        frames["eye_in_hand_rgb"].append(obs[lu.CAMERA_KEYS["wrist"]])
    arrays = {key: np.asarray(value) for key, value in record.items()}
    return libero_hdf5.Demo(**arrays, images={key: np.stack(value) for key, value in frames.items()})


def existing_demo_count(path: Path) -> int:
    if not path.exists():
        return 0
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return len(libero_hdf5.demo_names(f))
    except (OSError, libero_hdf5.DemoFileError):
        return 0  # unreadable: regenerate it


class _Attempts:
    """Expert attempts on fresh layouts of one task, each rendered when it succeeds (a no-camera env for the rollout,
    a camera env for the frames). One per process when attempts run in parallel."""

    def __init__(self, cfg: GenerateDemosConfig, task: lu.LiberoTask):
        self.cfg, self.task = cfg, task
        self.env = lu.make_env(task, cameras=False)
        self.expert = ScriptedExpert()
        try:
            goal_subtasks(self.env)
        except UnsupportedTask:
            lu.close_env(self.env)
            raise
        self.camera_env = lu.make_env(task, resolution=cfg.resolution, cameras=True, render_quality=cfg.render_quality)
        self.camera_env.reset()  # robosuite hides its visualisation sites (the gripper's green line) on reset

    def __call__(self, attempt: int) -> libero_hdf5.Demo | None:
        seed = self.cfg.seed * 100_000 + self.task.task_id * 1_000 + attempt
        success, record = rollout(self.env, self.expert, self.task.max_steps, seed, self.cfg.action_noise)
        return render_demo(self.camera_env, record) if success else None

    def close(self) -> None:
        lu.close_env(self.env)
        lu.close_env(self.camera_env)


def _sequential_attempts(cfg: GenerateDemosConfig, task: lu.LiberoTask, count: int):
    attempts = _Attempts(cfg, task)
    try:
        yield from (attempts(i) for i in range(count))
    finally:
        attempts.close()


_worker_attempts: _Attempts | None = None


def _start_worker(cfg: GenerateDemosConfig, task: lu.LiberoTask) -> None:
    global _worker_attempts
    lu.share_cores_with_other_simulators(cfg.num_workers)
    try:
        _worker_attempts = _Attempts(cfg, task)
    except UnsupportedTask as err:
        _worker_attempts = err  # reported with the first attempt


def _worker_attempt(attempt: int) -> libero_hdf5.Demo | None:
    if isinstance(_worker_attempts, UnsupportedTask):
        raise _worker_attempts
    return _worker_attempts(attempt)


def _parallel_attempts(cfg: GenerateDemosConfig, task: lu.LiberoTask, count: int):
    """Attempts spread over `cfg.num_workers` processes (each with its own simulators; "spawn" because GL contexts
    do not survive a fork), yielded in attempt order, so the file is the same whatever the number of workers."""
    pool = ProcessPoolExecutor(
        cfg.num_workers, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(cfg, task)
    )
    try:
        upcoming = iter(range(count))
        pending = deque(pool.submit(_worker_attempt, i) for i in islice(upcoming, cfg.num_workers))
        while pending:
            demo = pending.popleft().result()
            following = next(upcoming, None)
            if following is not None:
                pending.append(pool.submit(_worker_attempt, following))
            yield demo
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def generate_task(
    cfg: GenerateDemosConfig, task_id: int, show_progress: bool = True, parallel_attempts: bool = True
) -> TaskReport:
    """Demos for one task; with `num_workers` > 1 its attempts run in that many processes (unless this call is itself
    one of several tasks generated in parallel)."""
    task = lu.get_task(cfg.task_suite_name, task_id)
    report = TaskReport(task_id, task.language)
    path = Path(cfg.out_dir) / libero_hdf5.task_file_name(task.name)
    existing = 0 if cfg.overwrite else existing_demo_count(path)
    if existing >= cfg.num_demos_per_task:
        report.skipped = f"already has {existing} demos"
        return report
    count = cfg.num_demos_per_task * cfg.max_attempts_per_demo
    parallel = parallel_attempts and cfg.num_workers > 1
    attempts = (_parallel_attempts if parallel else _sequential_attempts)(cfg, task, count)
    lengths: list[int] = []
    start = time.perf_counter()
    bar = tqdm(total=cfg.num_demos_per_task, desc=f"task {task_id}", unit="demo", disable=not show_progress)
    env_args = {
        "env_name": "OffScreenRenderEnv", "camera_size": cfg.resolution, "generator": "scripted_expert",
        "render_quality": cfg.render_quality,
    }  # fmt: skip
    try:
        with libero_hdf5.DemoFileWriter(path, task.language, env_args, task.bddl_file) as writer:
            for demo in attempts:
                report.attempts += 1
                if demo is not None:
                    writer.append(demo)
                    lengths.append(len(demo))
                    bar.update(1)
                bar.set_postfix(success_rate=f"{len(lengths)}/{report.attempts}")
                if len(lengths) == cfg.num_demos_per_task or (not lengths and report.attempts >= cfg.give_up_after):
                    break
    except UnsupportedTask as err:
        report.skipped = f"unsupported ({err})"
    finally:
        attempts.close()
        bar.close()
    report.successes = len(lengths)
    report.seconds = time.perf_counter() - start
    report.mean_length = float(np.mean(lengths)) if lengths else 0.0
    if not lengths:
        path.unlink(missing_ok=True)  # an empty task file would only fail later, in the data loader
    return report


def print_summary(cfg: GenerateDemosConfig, reports: list[TaskReport]) -> None:
    print(f"\nScripted expert on {cfg.task_suite_name} -> {cfg.out_dir}")
    print(f"{'task':>4}  {'success':>9}  {'rate':>6}  {'steps':>5}  {'s/demo':>6}  instruction")
    for r in sorted(reports, key=lambda r: r.task_id):
        if r.skipped:
            print(f"{r.task_id:>4}  {'-':>9}  {'-':>6}  {'-':>5}  {'-':>6}  {r.language}  [{r.skipped}]")
            continue
        rate = r.successes / max(r.attempts, 1)
        per_demo = r.seconds / max(r.successes, 1)
        print(
            f"{r.task_id:>4}  {r.successes:>4}/{r.attempts:<4}  {rate:>6.1%}  {r.mean_length:>5.0f}  {per_demo:>6.1f}  "
            f"{r.language}"
        )
    attempted = [r for r in reports if not r.skipped]
    if attempted:
        successes, attempts = sum(r.successes for r in attempted), sum(r.attempts for r in attempted)
        print(f"total {successes}/{attempts} successful rollouts ({successes / max(attempts, 1):.1%})")


def make_missing_demos(train_cfg) -> None:
    """The embedded default (``vla-scripts/finetune.py`` on a preset model without data on disk): scripted demos of
    the dataset's suite first, as ``train_cfg`` (a ``FinetuneConfig``) asks; nothing when the folder exists."""
    from prismatic.policy.presets import PRESETS

    folder = Path(train_cfg.data_root_dir) / train_cfg.dataset_name
    if folder.is_dir() or not (train_cfg.generate_demos_if_missing and train_cfg.vla_path in PRESETS):
        return
    suite = train_cfg.dataset_name.removesuffix("_no_noops")
    print(f"[finetune] {folder} does not exist: generating scripted demonstrations for {suite} first")
    cfg = GenerateDemosConfig(
        task_suite_name=suite, num_demos_per_task=train_cfg.demos_per_task, out_dir=folder,
        task_ids=[int(t) for t in train_cfg.demo_task_ids.split(",")], resolution=train_cfg.demo_resolution,
        num_workers=2,
    )  # fmt: skip
    print_summary(cfg, [generate_task(cfg, t) for t in cfg.task_ids])


@draccus.wrap()
def main(cfg: GenerateDemosConfig) -> list[TaskReport]:
    task_ids = cfg.task_ids if cfg.task_ids is not None else list(range(lu.num_tasks(cfg.task_suite_name)))
    if cfg.num_workers <= 1 or len(task_ids) < cfg.num_workers:  # one task at a time, its attempts in parallel
        reports = [generate_task(cfg, task_id) for task_id in task_ids]
    else:  # whole tasks in parallel: fewer simulators to build
        with ProcessPoolExecutor(
            cfg.num_workers, mp_context=get_context("spawn"), initializer=lu.share_cores_with_other_simulators,
            initargs=(cfg.num_workers,),
        ) as pool:
            futures = [pool.submit(generate_task, cfg, task_id, False, False) for task_id in task_ids]
            reports = [f.result() for f in tqdm(as_completed(futures), total=len(futures), desc="tasks", unit="task")]
    print_summary(cfg, reports)
    if cfg.lerobot_out_dir is not None:
        from prismatic.vla.datasets.lerobot_format import export_hdf5_folder

        info = export_hdf5_folder(cfg.out_dir, cfg.lerobot_out_dir)
        print(f"LeRobot v3.0 copy: {cfg.lerobot_out_dir} ({info['total_episodes']} episodes)")
    return reports


if __name__ == "__main__":
    main()
