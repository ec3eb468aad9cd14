"""What the simulator costs, side by side in one run on one task: a step with two cameras under render quality full and
fast, a step without cameras (physics only), a policy query (preprocessing + model), and evaluation episodes per
second with 1 and 2 simulator workers (2: with a policy in each worker, and with one shared policy).

    python scripts/benchmark_simulation.py                      # libero_object task 0, 128 px, libero-cpu policy
    python scripts/benchmark_simulation.py --task_suite_name libero_spatial --resolution 256

The policy is the `libero-cpu` preset with random weights, saved to a temporary folder (its episodes fail and run
`--episode_steps` steps each, so every worker count does the same work). Timings are medians of repeated steps.
"""

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import draccus
import numpy as np

from experiments.robot.libero import libero_utils as lu


@dataclass
class SimulationBenchmarkConfig:
    # fmt: off
    task_suite_name: str = "libero_object"
    task_id: int = 0
    resolution: int = 128                   # both cameras, square
    steps: int = 40                         # timed steps per setting
    queries: int = 20                       # timed policy queries
    episodes: int = 50                      # evaluation episodes per run: 50, as an evaluation of one task runs
                                            # (12 left each worker's ~7 s start-up in the ratio: 1.58x vs 1.98x)
    episode_steps: int = 150                # steps per evaluation episode (start-up counts, as in a real run)
    # fmt: on


def step_ms(cfg: SimulationBenchmarkConfig, cameras: bool, quality: str = "full") -> float:
    task = lu.get_task(cfg.task_suite_name, cfg.task_id)
    env = lu.make_env(task, resolution=cfg.resolution, cameras=cameras, render_quality=quality)
    try:
        env.seed(0)
        env.reset()  # builds the fast model (and its mesh cache, once) outside the timing
        env.set_init_state(lu.get_initial_states(cfg.task_suite_name, cfg.task_id)[0])
        rng = np.random.default_rng(0)
        times = []
        for _ in range(cfg.steps):
            action = np.concatenate([rng.uniform(-0.3, 0.3, 6), [-1.0]])
            start = time.perf_counter()
            env.step(action)
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    finally:
        lu.close_env(env)


def random_policy_folder(root: Path) -> Path:
    from prismatic.policy.checkpoints import save_policy
    from prismatic.policy.presets import make_policy

    stats = {"libero_object_no_noops": {
        "action": {"q01": [-0.9] * 6 + [-1.0], "q99": [0.9] * 6 + [1.0], "mask": [True] * 6 + [False]},
        "proprio": {"q01": [-0.3, -0.3, 0.8, -3.2, -3.2, -3.2, 0.0, -0.04], "q99": [0.3, 0.3, 1.3, 3.2, 3.2, 3.2, 0.04, 0.0]},
    }}  # fmt: skip
    policy = make_policy("libero-cpu", norm_stats=stats)
    policy.vla.config.render_quality = "fast"
    folder = root / "libero-cpu-random"
    save_policy(folder, policy.vla, policy.processor, policy.action_head, policy.proprio_projector)
    return folder


def query_ms(cfg: SimulationBenchmarkConfig, folder: Path) -> float:
    from experiments.robot.libero.eval_config import EvalConfig
    from experiments.robot.libero.eval_workers import VLAPolicy

    policy = VLAPolicy(EvalConfig(pretrained_checkpoint=str(folder), unnorm_key="libero_object_no_noops"))
    rng = np.random.default_rng(0)
    image = lambda: rng.integers(0, 256, (cfg.resolution, cfg.resolution, 3), dtype=np.uint8)  # noqa: E731
    observation = {"full_image": image(), "wrist_image": image(), "state": np.zeros(8)}
    times = []
    for _ in range(cfg.queries + 2):
        start = time.perf_counter()
        policy.batch([observation], ["pick up the alphabet soup and place it in the basket"])
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[2:])


def episodes_per_second(cfg: SimulationBenchmarkConfig, folder: Path, workers: int, placement: str, log_dir: Path) -> float:
    from experiments.robot.libero.eval_config import EvalConfig
    from experiments.robot.libero.run_libero_eval import evaluate

    eval_cfg = EvalConfig(
        pretrained_checkpoint=str(folder), task_suite_name=cfg.task_suite_name, task_ids=[cfg.task_id],
        num_trials_per_task=cfg.episodes, max_steps=cfg.episode_steps, env_img_res=cfg.resolution,
        num_open_loop_steps=1, num_workers=workers, policy_placement=placement,
        local_log_dir=str(log_dir / f"w{workers}-{placement}"),
        unnorm_key="libero_object_no_noops", save_pruning_picture=False,
    )  # fmt: skip
    start = time.perf_counter()
    records = evaluate(eval_cfg)
    wall = time.perf_counter() - start
    simulating = sum(r["simulator_seconds"] for r in records) / wall  # simulators busy at once, on average
    waiting = sum(r["policy_seconds"] for r in records) / wall
    print(f"[benchmark] {workers} worker(s), policy {placement}: {wall:.1f} s, simulators stepping {simulating:.2f}, waiting for the "
          f"policy {waiting:.2f} (episode-seconds per second)")
    return cfg.episodes / wall


@draccus.wrap()
def main(cfg: SimulationBenchmarkConfig) -> dict:
    result = {
        "physics only": step_ms(cfg, cameras=False),
        "full": step_ms(cfg, cameras=True, quality="full"),
        "fast": step_ms(cfg, cameras=True, quality="fast"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_policy_folder(Path(tmp))
        result["query"] = query_ms(cfg, folder)
        runs = [(1, "auto"), (2, "workers"), (2, "shared")]
        rates = {run: episodes_per_second(cfg, folder, *run, Path(tmp)) for run in runs}
    print(f"\n{cfg.task_suite_name} task {cfg.task_id}, two {cfg.resolution} px cameras, median of {cfg.steps} steps")
    print("| measurement | value |\n|---|---|")
    print(f"| simulator step, render quality full (ms) | {result['full']:.1f} |")
    print(f"| simulator step, render quality fast (ms) | {result['fast']:.1f} |")
    print(f"| speed-up fast vs full | {result['full'] / result['fast']:.2f}x |")
    print(f"| simulator step without cameras (physics only, ms) | {result['physics only']:.1f} |")
    print(f"| policy query, libero-cpu (preprocessing + model, ms) | {result['query']:.1f} |")
    for (workers, placement), rate in rates.items():
        where = "" if workers == 1 else f", policy {'in each worker' if placement == 'workers' else 'shared'}"
        print(f"| evaluation, {workers} worker(s){where}, fast ({cfg.episode_steps}-step episodes per s) | {rate:.3f} |")
    for placement in ("workers", "shared"):
        print(f"| evaluation speed-up, 2 workers ({placement}) vs 1 | {rates[2, placement] / rates[1, 'auto']:.2f}x |")
    return {**result, "episodes_per_s": {f"{w}-{p}": r for (w, p), r in rates.items()}}


if __name__ == "__main__":
    main()
