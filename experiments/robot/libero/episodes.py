"""One LIBERO evaluation episode, as upstream runs it (spec §7.2–7.4), with the policy behind a callable.

The episode is self-contained (the env is re-seeded from the run seed, the task and the trial), so its outcome does
not depend on which worker runs it or what ran before: sequential and parallel evaluations agree episode by episode.
"""

import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from experiments.robot.libero import libero_utils as lu

# A policy maps one observation (as `libero_utils.policy_observation` builds it), the task language and the raw
# simulator observation to a chunk of policy actions (gripper: 1 open, 0 close) and optional statistics
# {"kept_tokens": int, "kept_indices": list, "latency_ms": float}. A policy with a `start_episode(env, obs)` method
# is told when the policy phase of an episode begins (the scripted expert plans from privileged state there).
PolicyFn = Callable[[dict, str, dict], tuple[np.ndarray, dict]]


@dataclass
class EpisodeResult:
    suite: str
    task_id: int
    task: str
    trial: int
    success: bool = False
    steps: int = 0
    queries: int = 0
    kept_tokens_mean: float | None = None
    kept_tokens: list | None = None  # per policy query, for the token-statistics report
    latency_ms_mean: float | None = None
    seconds: float = 0.0
    simulator_seconds: float = 0.0  # in env.reset/step (the rest of `seconds` is mostly waiting for the policy)
    policy_seconds: float = 0.0  # from asking the policy to its answer (in parallel runs: queueing included)
    final_eef_pos: list | None = None  # where the hand ended: compares runs beyond success and step counts
    error: str | None = None
    frames: list = field(default_factory=list, repr=False)  # rotated agentview frames, when recording a video
    # per step, when recording a video of a pruned policy: (observation, kept indices of the query acting then)
    pruning_frames: list = field(default_factory=list, repr=False)
    first_observation: dict | None = field(default=None, repr=False)
    first_pruning: dict | None = field(default=None, repr=False)  # kept_indices and num_patches of the first query

    def record(self) -> dict:
        """The JSON line written for this episode."""
        skip = {"frames", "pruning_frames", "first_observation", "first_pruning"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


def normalize_gripper_action(action: np.ndarray, binarize: bool = True) -> np.ndarray:
    """Policy gripper in [0, 1] -> [-1, 1], optionally binarised to ±1 (spec §7.4)."""
    action = np.array(action, dtype=np.float64)
    action[..., -1] = 2.0 * action[..., -1] - 1.0
    if binarize:
        action[..., -1] = np.sign(action[..., -1])
    return action


def invert_gripper_action(action: np.ndarray) -> np.ndarray:
    """The policy says 1 = open; LIBERO's controller says -1 = open."""
    action = np.array(action, dtype=np.float64)
    action[..., -1] *= -1.0
    return action


ENSEMBLE_WEIGHT_DECAY = 0.01  # ACT's m (Zhao et al. 2023): weight exp(-m i), i = 0 for the oldest guess


def ensembled_action(chunks: deque, decay: float = ENSEMBLE_WEIGHT_DECAY) -> np.ndarray:
    """Temporal ensembling (ACT): the chunks of the last queries, one per step, oldest first, each guessed the
    current step's action at a different position (the newest at 0, the one before at 1, ...); their mean weighted
    by exp(-decay i), i = 0 for the oldest (a negative decay trusts the newest guesses more)."""
    guesses = np.stack([chunk[len(chunks) - 1 - k] for k, chunk in enumerate(chunks)])
    weights = np.exp(-decay * np.arange(len(chunks)))
    return (weights[:, None] * guesses).sum(axis=0) / weights.sum()


def episode_seed(seed: int, task_id: int, trial: int) -> int:
    return seed * 1_000_003 + task_id * 1_000 + trial


@dataclass(frozen=True)
class EpisodeSpec:
    suite: str
    task_id: int
    trial: int
    max_steps: int
    num_steps_wait: int = lu.NUM_STEPS_WAIT
    num_open_loop_steps: int = 8
    seed: int = 7
    record_video: bool = False
    temporal_ensembling: bool = False  # query every step, act on the average of every chunk's guess for this step
    ensemble_weight_decay: float = ENSEMBLE_WEIGHT_DECAY


def run_episode(
    env, task: lu.LiberoTask, spec: EpisodeSpec, initial_state: np.ndarray, policy: PolicyFn
) -> EpisodeResult:
    """Run one episode; an exception inside it (simulator instability, a policy error) is recorded, not raised."""
    result = EpisodeResult(spec.suite, spec.task_id, task.language, spec.trial)
    kept, latencies, start = [], [], time.perf_counter()
    try:
        env.seed(episode_seed(spec.seed, spec.task_id, spec.trial))
        env.reset()
        obs = lu.settle(env, env.set_init_state(initial_state), spec.num_steps_wait)  # the policy is not asked yet
        result.simulator_seconds = time.perf_counter() - start
        if hasattr(policy, "start_episode"):
            policy.start_episode(env, obs)
        queue: deque = deque(maxlen=spec.num_open_loop_steps)
        recent_chunks: deque = deque()  # temporal ensembling: the chunks still covering the current step, oldest first
        kept_now = None  # the patches of the query whose actions are being executed
        for _ in range(spec.max_steps):
            observation = lu.policy_observation(obs)
            if spec.record_video:
                result.frames.append(observation["full_image"])
            if not queue:
                asked = time.perf_counter()
                chunk, stats = policy(observation, task.language, obs)
                result.policy_seconds += time.perf_counter() - asked
                kept_now = stats.get("kept_indices")
                result.queries += 1
                if result.first_observation is None:
                    result.first_observation = observation
                    if stats.get("kept_indices") is not None:
                        result.first_pruning = {
                            "kept_indices": stats["kept_indices"],
                            "num_patches": stats["num_patches"],
                        }
                if stats.get("kept_tokens") is not None:
                    kept.append(stats["kept_tokens"])
                if stats.get("latency_ms") is not None:
                    latencies.append(stats["latency_ms"])
                if spec.temporal_ensembling:
                    recent_chunks.append(np.asarray(chunk))
                    while len(recent_chunks) > len(chunk):
                        recent_chunks.popleft()
                    actions = [ensembled_action(recent_chunks, spec.ensemble_weight_decay)]
                else:
                    actions = chunk[: spec.num_open_loop_steps]
                queue.extend(invert_gripper_action(normalize_gripper_action(a)) for a in actions)
            if spec.record_video and kept_now is not None:
                result.pruning_frames.append((observation, kept_now))
            stepped = time.perf_counter()
            obs, _, done, _ = env.step(queue.popleft().tolist())
            result.simulator_seconds += time.perf_counter() - stepped
            result.steps += 1
            result.final_eef_pos = [float(x) for x in obs["robot0_eef_pos"]]
            if done:
                result.success = True
                break
    except Exception as err:  # noqa: BLE001 - one bad episode must not end a 10-hour evaluation
        result.error = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    result.kept_tokens_mean = float(np.mean(kept)) if kept else None
    result.kept_tokens = kept or None
    result.latency_ms_mean = float(np.mean(latencies)) if latencies else None
    result.seconds = time.perf_counter() - start
    return result
