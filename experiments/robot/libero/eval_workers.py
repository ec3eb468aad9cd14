"""Running the planned episodes: in this process, or in N simulator processes that each hold a copy of the policy or
query one shared copy here, which batches their queries (`EvalConfig.policy_placement`). Workers are spawned
processes fed from a queue (multiprocessing), not a scheduler of our own."""

import contextlib
import json
import os
import time
from multiprocessing import get_context
from pathlib import Path
from queue import Empty

import numpy as np

from experiments.robot.libero import libero_utils as lu
from experiments.robot.libero.episodes import EpisodeSpec, run_episode
from experiments.robot.libero.eval_config import EvalConfig


# --- policies ---------------------------------------------------------------------------------------------------------
class VLAPolicy:
    """A checkpoint behind the harness's policy interface; `batch` serves several simulators at once."""

    def __init__(self, cfg: EvalConfig):
        from prismatic.vla.normalization import resolve_unnorm_key

        self.policy = cfg.load_policy()
        self.unnorm_key = resolve_unnorm_key(self.policy.vla.norm_stats, cfg.unnorm_key or cfg.task_suite_name)
        self.center_crop = cfg.center_crop

    def batch(self, observations: list[dict], languages: list[str]) -> list[tuple[np.ndarray, dict]]:
        from prismatic.policy.inference import predict_action_chunk
        from prismatic.vla.image_pipeline import resize_image_for_policy

        start = time.perf_counter()
        # upstream's LIBERO script passes every frame through resize_image_for_policy (JPEG round trip + lanczos3),
        # even when it already has the policy's size, as the training frames were
        size = self.policy.vla.vision_backbone.image_size
        observations = [
            {k: resize_image_for_policy(v, size) if k == "full_image" or "wrist" in k else v for k, v in o.items()}
            for o in observations
        ]
        actions, stats = predict_action_chunk(self.policy, observations, languages, self.unnorm_key, self.center_crop)
        latency = (time.perf_counter() - start) * 1000 / len(observations)
        out = []
        for i in range(len(observations)):
            info = {"latency_ms": latency}
            if stats is not None:
                info["kept_tokens"] = int(stats.kept_counts[i])
                info["kept_indices"] = stats.kept_indices[i].tolist()
                info["num_patches"] = stats.num_patches
            out.append((actions[i], info))
        return out

    def __call__(self, observation: dict, language: str, obs: dict) -> tuple[np.ndarray, dict]:
        return self.batch([observation], [language])[0]


def harness_policy(cfg: EvalConfig):
    if cfg.policy == "scripted":
        from experiments.robot.libero.scripted_expert import ScriptedPolicy

        return ScriptedPolicy()
    return VLAPolicy(cfg)


# --- episodes --------------------------------------------------------------------------------------------------------
def initial_states(cfg: EvalConfig, task: lu.LiberoTask) -> list[np.ndarray]:
    if cfg.initial_states_path == "DEFAULT":
        return list(lu.get_initial_states(cfg.task_suite_name, task.task_id))
    meta = json.loads(Path(cfg.initial_states_path).read_text())
    key = task.language.replace(" ", "_")
    if key not in meta:
        raise KeyError(f"{cfg.initial_states_path} has no entry for task {key!r}")
    return [np.asarray(d["initial_state"]) for d in meta[key].values() if d["success"]]


def planned_episodes(cfg: EvalConfig) -> list[EpisodeSpec]:
    task_ids = cfg.task_ids if cfg.task_ids is not None else range(lu.num_tasks(cfg.task_suite_name))
    max_steps = cfg.max_steps or lu.TASK_MAX_STEPS[cfg.task_suite_name]
    return [
        EpisodeSpec(cfg.task_suite_name, t, trial, max_steps, cfg.num_steps_wait, cfg.num_open_loop_steps, cfg.seed,
                    cfg.save_rollout_video, cfg.temporal_ensembling, cfg.ensemble_weight_decay)
        for t in task_ids for trial in range(cfg.num_trials_per_task)
    ]  # fmt: skip


# --- sequential and parallel drivers -----------------------------------------------------------------------------------
def run_sequential(cfg: EvalConfig, specs: list[EpisodeSpec], on_result) -> None:
    policy = harness_policy(cfg)
    for task_id in sorted({s.task_id for s in specs}):
        task = lu.get_task(cfg.task_suite_name, task_id)
        states = initial_states(cfg, task)
        env = lu.make_env(task, resolution=cfg.env_img_res, render_quality=cfg.render_quality)
        for spec in (s for s in specs if s.task_id == task_id):
            on_result(run_episode(env, task, spec, states[spec.trial % len(states)], policy))
        lu.close_env(env)


def policy_in_workers(cfg: EvalConfig) -> bool:
    """Whether each simulator process runs its own copy of the policy (see ``EvalConfig.policy_placement``).

    On the CPU a shared policy is a third process competing with N simulators for N cores, and every simulator
    waits on it: 2 workers ran 1.08x one worker's episodes per second (libero-cpu, 2 cores; a query every step).
    A copy per worker, one thread each, keeps every core busy with its own simulator-policy loop. On a GPU the
    policy does not take the simulators' cores, and one copy serves every worker's queries in a batch.
    """
    if cfg.policy == "scripted":
        return True
    if cfg.policy_placement == "auto":
        import torch

        return not torch.cuda.is_available()
    return cfg.policy_placement == "workers"


def _worker(cfg: EvalConfig, jobs, requests, replies, results, worker_id: int) -> None:
    """A simulator process: runs episodes from `jobs`, querying its own policy or the main process's shared one."""
    lu.share_cores_with_other_simulators(cfg.num_workers)
    local = None
    if policy_in_workers(cfg):
        if cfg.policy == "vla":
            import torch

            torch.set_num_threads(1)  # one core per simulator-policy loop
        local = harness_policy(cfg)

    def remote(observation: dict, language: str, obs: dict):
        requests.put((worker_id, observation, language))
        return replies.get()

    policy = local if local is not None else remote
    envs, states = {}, {}
    while (spec := jobs.get()) is not None:
        if spec.task_id not in envs:
            for env in envs.values():
                lu.close_env(env)
            task = lu.get_task(cfg.task_suite_name, spec.task_id)
            envs = {spec.task_id: lu.make_env(task, resolution=cfg.env_img_res, render_quality=cfg.render_quality)}
            states[spec.task_id] = (task, initial_states(cfg, task))
        task, task_states = states[spec.task_id]
        result = run_episode(envs[spec.task_id], task, spec, task_states[spec.trial % len(task_states)], policy)
        results.put(result)
    for env in envs.values():
        lu.close_env(env)
    results.put(None)


@contextlib.contextmanager
def policy_threads_beside(num_simulators: int):
    """CPU threads for the policy in the main process: the cores the simulator processes leave, at least one.

    torch's default (every core) makes its threads wait on each other behind busy simulators: on 2 cores with 2
    simulators, 8 libero_object episodes took 154.6 s with 2 threads and 131.2 s with 1, same actions.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - num_simulators))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_parallel(cfg: EvalConfig, specs: list[EpisodeSpec], on_result) -> None:
    """N simulator processes, each with its own policy or querying the main process's (batched over the waiting)."""
    ctx = get_context("spawn")  # GL contexts and CUDA do not survive fork
    jobs, requests, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    replies = [ctx.Queue() for _ in range(cfg.num_workers)]
    for spec in sorted(specs, key=lambda s: (s.task_id, s.trial)):
        jobs.put(spec)
    for _ in range(cfg.num_workers):
        jobs.put(None)
    workers = [
        ctx.Process(target=_worker, args=(cfg, jobs, requests, replies[i], results, i), daemon=True)
        for i in range(cfg.num_workers)
    ]
    for w in workers:
        w.start()
    shared = None if policy_in_workers(cfg) else VLAPolicy(cfg)
    with policy_threads_beside(cfg.num_workers):
        serve(shared, cfg.num_workers, workers, requests, replies, results, on_result)
    for w in workers:
        w.join()


def serve(policy, running: int, workers, requests, replies, results, on_result) -> None:
    """Answer the simulators' requests to the shared ``policy`` (batched; None when each worker has its own) and
    collect their episodes until each of the ``running`` workers is done."""
    while running:
        pending = []
        try:  # wait for the first request, then take every other one that is already there: one batch
            pending.append(requests.get(timeout=0.05))
            while True:
                pending.append(requests.get_nowait())
        except Empty:
            pass
        if pending and policy is not None:
            answers = policy.batch([p[1] for p in pending], [p[2] for p in pending])
            for (worker_id, _, _), answer in zip(pending, answers):
                replies[worker_id].put(answer)
        while True:
            try:
                result = results.get_nowait()
            except Empty:
                break
            if result is None:
                running -= 1
            else:
                on_result(result)
        if not any(w.is_alive() for w in workers) and running:
            raise RuntimeError("evaluation workers died; see their output above")
