"""Evaluate a policy in the LIBERO simulator: upstream's protocol, resumable, optionally in parallel.

    python experiments/robot/libero/run_libero_eval.py --pretrained_checkpoint CKPT --task_suite_name libero_spatial

Each finished episode is appended to `{local_log_dir}/EVAL-{suite}-{run}.jsonl` (suite, task, trial, success, steps,
kept visual tokens, policy latency, error); running the same command again skips finished episodes. An exception
inside an episode is recorded and the run goes on. `--num_workers N` runs N simulators in separate processes, each
with its own copy of the policy or sharing one that batches their queries (`--policy_placement`). `--policy scripted`
runs the scripted expert through the same harness.
"""

import contextlib
import json
import os
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from queue import Empty
from typing import List, Optional

import draccus
import numpy as np

from experiments.robot.libero import libero_utils as lu
from experiments.robot.libero.episodes import EpisodeResult, EpisodeSpec, run_episode
from prismatic.policy.options import PolicyOptions

POLICY_PLACEMENTS = ("auto", "workers", "shared")


@dataclass
class GenerateConfig(PolicyOptions):
    """Upstream's evaluation flags: the policy's (``PolicyOptions``) and the episodes'."""

    # fmt: off
    pretrained_checkpoint: str = ""                 # checkpoint folder or Hub id (not needed for --policy scripted)
    num_open_loop_steps: int = 8                    # actions executed per policy query
    render_quality: str = "auto"                    # fast | full | auto: as the checkpoint's training frames (full
                                                    # for released checkpoints; fast for --policy scripted)

    task_suite_name: str = "libero_spatial"         # libero_spatial | libero_object | libero_goal | libero_10 | libero_90
    num_steps_wait: int = 10
    num_trials_per_task: int = 50
    initial_states_path: str = "DEFAULT"            # or a {suite}_metainfo.json from regenerate_libero_dataset.py
    env_img_res: int = 256
    task_ids: Optional[List[int]] = None            # default: every task of the suite
    max_steps: Optional[int] = None                 # default: the suite's (upstream TASK_MAX_STEPS)

    policy: str = "vla"                             # vla | scripted (the expert, to validate the harness)
    num_workers: int = 1                            # simulator processes
    policy_placement: str = "auto"                  # with num_workers > 1: workers (a copy of the policy in each
                                                    # simulator process, one CPU thread each) | shared (one copy in
                                                    # this process, queries batched across workers) | auto (shared
                                                    # on a GPU, workers on the CPU: README, "Simulation speed")
    run_id_note: Optional[str] = None
    local_log_dir: str = "./experiments/logs"
    save_rollout_video: bool = False                # mp4 per episode (+ kept-patch overlay when pruning) in rollouts/
    save_pruning_picture: bool = True               # kept patches over both cameras, first query of each task
    # fmt: on

    def __post_init__(self):
        super().__post_init__()
        lu.check_suite_name(self.task_suite_name)
        if self.policy not in ("vla", "scripted"):
            raise ValueError(f"--policy must be 'vla' or 'scripted', got {self.policy!r}")
        if self.policy == "vla":
            self.require_checkpoint(", or --policy scripted")
        if "image_aug" in self.pretrained_checkpoint and not self.center_crop:
            raise ValueError("this checkpoint was trained with image augmentation: evaluate with --center_crop True")
        if self.num_workers < 1:
            raise ValueError("--num_workers must be at least 1")
        if self.policy_placement not in POLICY_PLACEMENTS:
            raise ValueError(f"--policy_placement must be one of {POLICY_PLACEMENTS}, got {self.policy_placement!r}")
        if self.render_quality != "auto":
            from experiments.robot.libero.visual_meshes import check_render_quality

            check_render_quality(self.render_quality)

    @property
    def run_name(self) -> str:
        source = "scripted" if self.policy == "scripted" else Path(self.pretrained_checkpoint.rstrip("/")).name
        pruner = self.visual_token_pruner
        if pruner is not None:  # results of different pruners must never share (and resume from) one file
            pruner += f"{self.visual_token_budget}" if self.visual_token_budget is not None else ""
            pruner += f"-k{self.fastv_layer}" if self.visual_token_pruner == "fastv" else ""
        duplicates = self.pruner_eval_duplicates and f"duplicates-{self.pruner_eval_duplicates}"
        parts = [source, f"seed{self.seed}", pruner, duplicates, self.run_id_note]
        return "--".join(p for p in parts if p)

    @property
    def results_path(self) -> Path:
        return Path(self.local_log_dir) / f"EVAL-{self.task_suite_name}-{self.run_name}.jsonl"


# --- policies ---------------------------------------------------------------------------------------------------------
class VLAPolicy:
    """A checkpoint behind the harness's policy interface; `batch` serves several simulators at once."""

    def __init__(self, cfg: GenerateConfig):
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


def make_policy(cfg: GenerateConfig):
    if cfg.policy == "scripted":
        from experiments.robot.libero.scripted_expert import ScriptedPolicy

        return ScriptedPolicy()
    return VLAPolicy(cfg)


# --- episodes, results, resumption -----------------------------------------------------------------------------------
def initial_states(cfg: GenerateConfig, task: lu.LiberoTask) -> list[np.ndarray]:
    if cfg.initial_states_path == "DEFAULT":
        return list(lu.get_initial_states(cfg.task_suite_name, task.task_id))
    meta = json.loads(Path(cfg.initial_states_path).read_text())
    key = task.language.replace(" ", "_")
    if key not in meta:
        raise KeyError(f"{cfg.initial_states_path} has no entry for task {key!r}")
    return [np.asarray(d["initial_state"]) for d in meta[key].values() if d["success"]]


def planned_episodes(cfg: GenerateConfig) -> list[EpisodeSpec]:
    task_ids = cfg.task_ids if cfg.task_ids is not None else range(lu.num_tasks(cfg.task_suite_name))
    max_steps = cfg.max_steps or lu.TASK_MAX_STEPS[cfg.task_suite_name]
    return [
        EpisodeSpec(cfg.task_suite_name, t, trial, max_steps, cfg.num_steps_wait, cfg.num_open_loop_steps, cfg.seed,
                    cfg.save_rollout_video)
        for t in task_ids for trial in range(cfg.num_trials_per_task)
    ]  # fmt: skip


def finished_episodes(path: Path) -> dict[tuple[int, int], dict]:
    """(task_id, trial) -> record, from an earlier run of the same command (a torn last line is ignored)."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(record["task_id"], record["trial"])] = record
    return done


# the settings that change what an episode does: results made under other values must not be resumed into
OUTCOME_SETTINGS = (
    "policy", "pretrained_checkpoint", "num_open_loop_steps", "max_steps", "num_steps_wait", "env_img_res",
    "center_crop", "prune_visual_tokens", "visual_token_pruner", "visual_token_budget", "fastv_layer",
    "action_readout", "pruner_eval_duplicates", "initial_states_path", "unnorm_key", "precision", "render_quality",
)  # fmt: skip


def resolve_render_quality(cfg: GenerateConfig) -> str:
    """The renderer to evaluate with: ``auto`` renders as the policy's training frames were (our checkpoints record
    it; released ones, which do not, were trained on LIBERO's full meshes); another choice is kept, with a warning
    when it differs from the training frames'."""
    if cfg.policy == "scripted":
        return "fast" if cfg.render_quality == "auto" else cfg.render_quality
    from prismatic.policy.checkpoints import resolve_checkpoint

    config = json.loads((resolve_checkpoint(cfg.pretrained_checkpoint) / "config.json").read_text())
    trained = config.get("render_quality", "full")
    if cfg.render_quality == "auto":
        return trained
    if cfg.render_quality != trained:
        print(
            f"[eval] warning: rendering with --render_quality {cfg.render_quality}, but {cfg.pretrained_checkpoint} "
            f"was trained on {trained!r} renders: the policy sees images unlike its training frames"
        )
    return cfg.render_quality


def check_resume_settings(cfg: GenerateConfig, path: Path, resuming: bool) -> None:
    """Record the settings beside the results; refuse to add episodes to results made with other settings."""
    import torch

    from prismatic.files import write_text_atomic
    from prismatic.precision import resolve_precision

    settings = {key: getattr(cfg, key) for key in OUTCOME_SETTINGS}
    settings["precision"] = resolve_precision(cfg.precision, "cuda" if torch.cuda.is_available() else "cpu").name
    settings_path = path.with_suffix(".settings.json")
    if resuming and settings_path.exists():
        earlier = json.loads(settings_path.read_text())
        changed = {k: (earlier.get(k), v) for k, v in settings.items() if earlier.get(k) != v}
        if changed:
            listed = ", ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
            raise ValueError(
                f"{path} holds episodes evaluated with other settings ({listed}). Resuming would mix them: pass "
                "--run_id_note (or another --local_log_dir) for a new results file, or delete the old one."
            )
    write_text_atomic(settings_path, json.dumps(settings, indent=1) + "\n")


def append_record(path: Path, record: dict) -> None:
    """One line per episode, flushed to disk before the next starts: a killed run loses at most the episode in
    flight."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_artifacts(cfg: GenerateConfig, result: EpisodeResult, task_seen: set) -> None:
    from experiments.robot.libero import visualize

    folder = Path(cfg.local_log_dir) / "rollouts" / cfg.run_name
    name = f"{cfg.task_suite_name}--task{result.task_id}--trial{result.trial}--success={result.success}"
    if cfg.save_rollout_video and result.frames:
        visualize.save_video(folder / f"{name}.mp4", result.frames)
    if cfg.save_rollout_video and result.pruning_frames:
        visualize.save_pruning_video(
            folder / f"{name}--kept_patches.mp4", result.pruning_frames, result.first_pruning["num_patches"],
            cfg.num_images_in_input,
        )  # fmt: skip
    if cfg.save_pruning_picture and result.first_pruning is not None and result.task_id not in task_seen:
        task_seen.add(result.task_id)
        visualize.save_pruning_picture(
            folder / f"{cfg.task_suite_name}--task{result.task_id}--kept_patches.png", result.first_observation,
            result.first_pruning["kept_indices"], result.first_pruning["num_patches"], cfg.num_images_in_input,
            result.task,
        )  # fmt: skip


# --- sequential and parallel drivers -----------------------------------------------------------------------------------
def run_sequential(cfg: GenerateConfig, specs: list[EpisodeSpec], on_result) -> None:
    policy = make_policy(cfg)
    for task_id in sorted({s.task_id for s in specs}):
        task = lu.get_task(cfg.task_suite_name, task_id)
        states = initial_states(cfg, task)
        env = lu.make_env(task, resolution=cfg.env_img_res, render_quality=cfg.render_quality)
        for spec in (s for s in specs if s.task_id == task_id):
            on_result(run_episode(env, task, spec, states[spec.trial % len(states)], policy))
        lu.close_env(env)


def policy_in_workers(cfg: GenerateConfig) -> bool:
    """Whether each simulator process runs its own copy of the policy (see ``GenerateConfig.policy_placement``).

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


def _worker(cfg: GenerateConfig, jobs, requests, replies, results, worker_id: int) -> None:
    """A simulator process: runs episodes from `jobs`, querying its own policy or the main process's shared one."""
    local = None
    if policy_in_workers(cfg):
        if cfg.policy == "vla":
            import torch

            torch.set_num_threads(1)  # one core per simulator-policy loop
        local = make_policy(cfg)

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


def run_parallel(cfg: GenerateConfig, specs: list[EpisodeSpec], on_result) -> None:
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


def summarize(records: list[dict]) -> str:
    lines = [f"{'task':>4}  {'success':>9}  {'kept tokens':>11}  {'latency ms':>10}  instruction"]
    by_task: dict[int, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task_id"], []).append(r)
    for task_id, rs in sorted(by_task.items()):
        kept = [r["kept_tokens_mean"] for r in rs if r.get("kept_tokens_mean") is not None]
        lat = [r["latency_ms_mean"] for r in rs if r.get("latency_ms_mean") is not None]
        wins = sum(r["success"] for r in rs)
        kept_text = f"{np.mean(kept):.1f}" if kept else "-"  # "-": evaluated without pruning
        latency_text = f"{np.mean(lat):.1f}" if lat else "-"
        lines.append(f"{task_id:>4}  {wins:>4}/{len(rs):<4}  {kept_text:>11}  {latency_text:>10}  {rs[0]['task']}")
    total, wins = len(records), sum(r["success"] for r in records)
    errors = sum(r.get("error") is not None for r in records)
    lines.append(
        f"Overall success rate: {wins}/{total} = {wins / max(total, 1):.4f} ({100 * wins / max(total, 1):.1f}%)"
        + (f", {errors} episode(s) ended in an error" if errors else "")
    )
    return "\n".join(lines)


def evaluate(cfg: GenerateConfig) -> list[dict]:
    from tqdm import tqdm

    cfg.render_quality = resolve_render_quality(cfg)
    path = cfg.results_path
    done = finished_episodes(path)
    check_resume_settings(cfg, path, resuming=bool(done))
    specs = [s for s in planned_episodes(cfg) if (s.task_id, s.trial) not in done]
    print(
        f"[eval] {cfg.task_suite_name}: {len(done)} episode(s) already in {path}, {len(specs)} to run "
        f"with {cfg.num_workers} worker(s), {cfg.render_quality} renders"
    )
    bar = tqdm(total=len(specs), desc="episodes", unit="episode")
    records, task_seen = list(done.values()), set()

    def on_result(result: EpisodeResult) -> None:
        record = result.record()
        append_record(path, record)
        save_artifacts(cfg, result, task_seen)
        records.append(record)
        wins = sum(r["success"] for r in records)
        bar.update(1)
        bar.set_postfix(success=f"{wins}/{len(records)}")

    if specs:
        (run_sequential if cfg.num_workers == 1 else run_parallel)(cfg, specs, on_result)
    bar.close()
    summary = summarize(records)
    print(summary)
    summary_path = path.with_suffix(".summary.txt")
    summary_path.write_text(summary + "\n")
    return records


@draccus.wrap()
def main(cfg: GenerateConfig) -> list[dict]:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
