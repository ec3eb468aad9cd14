"""The paper's study at laptop scale: LightVLA's four claims measured on the CPU preset in the real simulator.

Stages, each resumable (re-running continues where it stopped; what is finished is read back, not redone):

1. scripted demonstrations for every task (fresh layouts, never the evaluation initial states);
2. stage 1: one multi-task OpenVLA-OFT policy (the ``libero-cpu`` preset, pruning off) trained from scratch;
3. stage 2, every setting from the same stage-1 checkpoint and for the same number of steps: LightVLA with the
   noise decaying 1 -> 0 (uniform noise, upstream's code), with decaying Gumbel noise (the paper's text), without
   noise and with fixed noise, and OpenVLA-OFT itself continued (the equal-compute baseline);
4. every policy evaluated from the official initial states (``trials_per_task`` episodes per task), and the
   continued OFT policy with each training-free pruner at the budget LightVLA was measured to keep;
5. FLOPs (counted) and latency (measured in this process) of every policy on the same observations;
6. ``results.json``, ``results.md`` and figures: kept tokens over training per noise schedule, success against kept
   tokens (one point per setting), kept tokens per task, and a kept-patch video of a successful LightVLA episode.

Claims checked: (1) learned pruning keeps a small fraction of the tokens without losing success; (2) decaying noise
beats no noise (too few tokens) and fixed noise (too many); (3) learned pruning beats training-free pruning at the
same budget; (4) the number of kept tokens adapts to the task.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from prismatic.files import write_text_atomic
from prismatic.training.recipes import STAGE2_LEARNING_RATE

SUITE_DATASET = "{suite}_no_noops"
SETTINGS = {  # stage-2 runs: name -> (pruning, noise distribution, noise schedule)
    "lightvla": (True, "uniform", "decay"),
    "lightvla_gumbel": (True, "gumbel", "decay"),
    "lightvla_no_noise": (True, "uniform", "none"),
    "lightvla_fixed_noise": (True, "uniform", "fixed"),
    "oft": (False, "uniform", "none"),
}
BASELINES = ("random_k", "text_topk", "fastv")


@dataclass
class StudyConfig:
    # fmt: off
    out_dir: Path = Path("runs/study")
    tasks: list[str] = field(default_factory=lambda: ["libero_object:0", "libero_object:1", "libero_spatial:0"])
    demos_per_task: int = 30
    demo_resolution: int = 128                  # camera size of demos and evaluation (the preset's image size)
    preset: str = "libero-cpu"
    batch_size: int = 64
    stage1_steps: int = 3000                    # OpenVLA-OFT from scratch, every parameter, learning rate 1e-3
    stage2_steps: int = 400                     # every stage-2 setting, heads continued
    stage2_learning_rate: float = STAGE2_LEARNING_RATE  # 3e-4 pruned harder (4.6 kept) and lost successes: README
    trials_per_task: int = 50                   # every official initial state: the same 50 for every policy (paired)
    num_open_loop_steps: int = 1                # actions executed per policy query (replanning every step: README)
    max_episode_steps: Optional[int] = None     # default: the suite's (upstream TASK_MAX_STEPS); smoke tests only
    num_workers: int = 2                        # simulator processes (and demo-generation processes)
    latency_repeats: int = 20
    evaluate_count_weighting: bool = False      # also LightVLA with pruner_eval_duplicates=count (+1 policy to run)
    seed: int = 7
    quick: bool = False                         # a ~20-minute smoke version: small numbers everywhere
    # fmt: on

    def __post_init__(self):
        if self.quick:
            self.demos_per_task, self.stage1_steps, self.stage2_steps = 4, 150, 40
            self.trials_per_task, self.latency_repeats = 2, 5
        self.out_dir = Path(self.out_dir)
        for task in self.tasks:
            suite, _, task_id = task.partition(":")
            if not task_id.isdigit():
                raise ValueError(f"--tasks entries are suite:task_id (e.g. libero_object:0), got {task!r}")

    @property
    def suites(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for task in self.tasks:
            suite, _, task_id = task.partition(":")
            out.setdefault(suite, []).append(int(task_id))
        return out

    @property
    def dataset_name(self) -> str:
        return "+".join(SUITE_DATASET.format(suite=suite) for suite in self.suites)

    def run_dir(self, name: str) -> Path:
        return self.out_dir / "runs" / name


def log(message: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- 1. demonstrations ---------------------------------------------------------------------------------------------
def make_demos(cfg: StudyConfig) -> None:
    from experiments.robot.libero.generate_scripted_demos import GenerateDemosConfig, generate_task, print_summary

    for suite, task_ids in cfg.suites.items():
        gen = GenerateDemosConfig(
            task_suite_name=suite, num_demos_per_task=cfg.demos_per_task, task_ids=task_ids,
            out_dir=cfg.out_dir / "data" / SUITE_DATASET.format(suite=suite), resolution=cfg.demo_resolution,
            num_workers=cfg.num_workers,
        )  # fmt: skip
        reports = [generate_task(gen, task_id) for task_id in task_ids]
        print_summary(gen, reports)
        missing = [r.task_id for r in reports if not r.skipped and r.successes < cfg.demos_per_task]
        if missing:
            raise RuntimeError(f"the scripted expert could not make {cfg.demos_per_task} demos for {suite} {missing}")


# --- 2-3. training -------------------------------------------------------------------------------------------------
def finished(run_dir: Path, steps: int) -> bool:
    from prismatic.training.metrics import read_metrics

    return (run_dir / "config.json").exists() and any(r["step"] == steps for r in _metrics(run_dir, read_metrics))


def _metrics(run_dir: Path, read_metrics) -> list[dict]:
    try:
        return read_metrics(run_dir)
    except FileNotFoundError:
        return []


def train_run(cfg: StudyConfig, name: str, **recipe) -> Path:
    """One training run of ``recipe`` (``prismatic.training.recipes``), resumed if interrupted, skipped if finished."""
    from prismatic.training.config import FinetuneConfig
    from prismatic.training.trainer import train

    run_dir, steps = cfg.run_dir(name), recipe["max_steps"]
    if finished(run_dir, steps):
        log(f"{name}: finished earlier ({run_dir})")
        return run_dir
    values = dict(
        data_root_dir=cfg.out_dir / "data", dataset_name=cfg.dataset_name, run_root_dir=run_dir.parent,
        run_id_override=name, num_images_in_input=2, use_proprio=True, batch_size=cfg.batch_size,
        save_freq=max(steps // 4, 1), save_latest_checkpoint_only=True, log_freq=max(steps // 10, 1),
        kept_tokens_log_freq=max(steps // 20, 1), num_workers=0, seed=cfg.seed,
        generate_demos_if_missing=False, resume=(run_dir / "training_state.pt").exists(),
    )  # fmt: skip
    log(f"{name}: training {steps} steps{' (resuming)' if values['resume'] else ''}")
    train(FinetuneConfig(**{**values, **recipe}))
    return run_dir


def train_all(cfg: StudyConfig) -> None:
    from prismatic.training import recipes

    stage1 = train_run(cfg, "stage1_oft", **recipes.stage1(cfg.stage1_steps, cfg.preset), kept_tokens_log_freq=0)
    for name, (prune, noise, schedule) in SETTINGS.items():
        stage2 = recipes.stage2(cfg.stage2_steps, stage1, cfg.stage2_learning_rate)
        train_run(cfg, name, **{**stage2, "prune_visual_tokens": prune}, pruner_noise=noise,
                  pruner_noise_schedule=schedule)  # fmt: skip


# --- 4. evaluation -------------------------------------------------------------------------------------------------
def evaluate_policy(cfg: StudyConfig, name: str, checkpoint: Path | None = None, **options) -> list[dict]:
    """Every task of the study for one policy (finished episodes are read back from the results files, which are
    named after the checkpoint and the pruner, so every setting has its own)."""
    from experiments.robot.libero.run_libero_eval import GenerateConfig, evaluate

    records = []
    for suite, task_ids in cfg.suites.items():
        eval_cfg = GenerateConfig(
            pretrained_checkpoint=str(checkpoint or cfg.run_dir(name)), task_suite_name=suite, task_ids=task_ids,
            num_trials_per_task=cfg.trials_per_task, env_img_res=cfg.demo_resolution, num_workers=cfg.num_workers,
            num_open_loop_steps=cfg.num_open_loop_steps, unnorm_key=cfg.dataset_name, seed=cfg.seed,
            local_log_dir=str(cfg.out_dir / "eval"), max_steps=cfg.max_episode_steps, **options,
        )  # fmt: skip
        log(f"evaluating {name} on {suite} tasks {task_ids}")
        records += [{**r, "setting": name} for r in evaluate(eval_cfg)]
    return records


def derived_policy(name: str, budget: int) -> tuple[str, dict]:
    """(trained run, inference options) of a policy evaluated without a run of its own: the continued OFT policy
    with a training-free pruner at LightVLA's budget, or LightVLA with each kept patch weighted by the queries that
    picked it (``count``: what its training computed, ``prismatic/models/pruning.py``)."""
    if name == "lightvla_count":
        return "lightvla", {"pruner_eval_duplicates": "count"}
    return "oft", {"visual_token_pruner": name, "visual_token_budget": budget}


DERIVED = ("lightvla_count", *BASELINES)
# Evaluation order: an interrupted study has then measured as many claims as it can (1 and 4: LightVLA and OFT;
# 3: the training-free pruners at LightVLA's budget; 2: the other noise schedules), the optional policy last.
EVAL_ORDER = ("lightvla", "oft", *BASELINES, "lightvla_gumbel", "lightvla_no_noise", "lightvla_fixed_noise",
              "lightvla_count")  # fmt: skip


def policies(cfg: StudyConfig) -> list[str]:
    """Every policy the study evaluates, in table order."""
    return [*SETTINGS, *(n for n in DERIVED if n != "lightvla_count" or cfg.evaluate_count_weighting)]


def lightvla_budget(results: dict[str, list[dict]]) -> int:
    """LightVLA's measured mean kept tokens per query: the baselines' budget."""
    return max(1, round(np.mean([k for r in results["lightvla"] for k in r.get("kept_tokens") or []])))


def evaluate_all(cfg: StudyConfig) -> dict[str, list[dict]]:
    wanted = policies(cfg)
    results: dict[str, list[dict]] = {}
    for name in (n for n in EVAL_ORDER if n in wanted):
        if name in SETTINGS:
            results[name] = evaluate_policy(cfg, name, save_rollout_video=name == "lightvla")
        else:
            run, options = derived_policy(name, lightvla_budget(results))
            results[name] = evaluate_policy(
                cfg, name, checkpoint=cfg.run_dir(run), save_pruning_picture=False, **options
            )
    return {name: results[name] for name in wanted}


# --- 5. FLOPs and latency ------------------------------------------------------------------------------------------
def efficiency(cfg: StudyConfig, results: dict[str, list[dict]]) -> dict[str, dict]:
    """FLOPs and latency of `predict_action` per setting, on the same observations (frames of the training demos)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from prismatic.policy.inference import load_inference_policy, policy_inputs

    observations, tasks = demo_observations(cfg)
    budget = lightvla_budget(results)
    out = {}
    for name in results:
        run, options = derived_policy(name, budget) if name in DERIVED else (name, {})
        policy = load_inference_policy(str(cfg.run_dir(run)), seed=cfg.seed, **options)
        inputs = [policy_inputs(policy, [o], [t], cfg.dataset_name) for o, t in zip(observations, tasks)]
        flops, times = [], []
        with torch.no_grad():
            for sample in inputs:
                with FlopCounterMode(display=False) as counter:
                    policy.vla.predict_action(**sample)
                flops.append(counter.get_total_flops())
            for _ in range(cfg.latency_repeats):
                for sample in inputs:
                    start = time.perf_counter()
                    policy.vla.predict_action(**sample)
                    times.append((time.perf_counter() - start) * 1e3)
        out[name] = {"gflops": float(np.mean(flops)) / 1e9, "latency_ms": statistics.median(times)}
    for row in out.values():
        row["flops_x"] = row["gflops"] / out["oft"]["gflops"]
        row["latency_x"] = row["latency_ms"] / out["oft"]["latency_ms"]
    return out


def demo_observations(cfg: StudyConfig, per_task: int = 2) -> tuple[list[dict], list[str]]:
    """A few upright frames and states from the demos of every task, as evaluation hands them to the policy."""
    import h5py

    from prismatic.vla.datasets import libero_hdf5

    observations, tasks = [], []
    for suite in cfg.suites:
        for path in libero_hdf5.list_demo_files(cfg.out_dir / "data" / SUITE_DATASET.format(suite=suite)):
            with h5py.File(path, "r") as f:
                language = libero_hdf5.read_language(f)
                group = f["data"][libero_hdf5.demo_names(f)[0]]
                for t in np.linspace(0, group.attrs["num_samples"] - 1, per_task).astype(int):
                    observations.append({
                        "full_image": group["obs/agentview_rgb"][t][::-1, ::-1].copy(),
                        "wrist_image": group["obs/eye_in_hand_rgb"][t][::-1, ::-1].copy(),
                        "state": libero_hdf5.read_proprio(group["obs"], t),
                    })  # fmt: skip
                    tasks.append(language)
    return observations, tasks


# --- 6. report -----------------------------------------------------------------------------------------------------
def summarize(records: list[dict]) -> dict:
    from experiments.robot.libero.study_statistics import wilson_interval

    kept = [k for r in records for k in r.get("kept_tokens") or []]
    successes = sum(r["success"] for r in records)
    low, high = wilson_interval(successes, len(records))
    return {
        "episodes": len(records), "successes": successes, "success": successes / max(len(records), 1),
        "ci95": [low, high], "kept_mean": float(np.mean(kept)) if kept else None,
        "kept_sd": float(np.std(kept)) if kept else None,
    }  # fmt: skip


def tabulate(results: dict[str, list[dict]], num_patches: int) -> dict[str, dict]:
    table = {}
    for name, records in results.items():
        rows = {"all": summarize(records)}
        for key in sorted({(r["suite"], r["task_id"]) for r in records}):
            rows[f"{key[0]}:{key[1]}"] = summarize([r for r in records if (r["suite"], r["task_id"]) == key])
        for row in rows.values():
            if row["kept_mean"] is None:  # no pruning: every patch
                row["kept_mean"], row["kept_sd"] = float(num_patches), 0.0
        table[name] = rows
    return table


CLAIMS = {  # claim -> (verdict rule, [(policy, against)]): success of the first against the second, paired
    "1. LightVLA keeps a small fraction of the visual tokens without losing success": (
        "no_worse", [("lightvla", "oft")],
    ),
    "2. decaying noise beats no noise and fixed noise": (
        "better", [("lightvla", "lightvla_no_noise"), ("lightvla", "lightvla_fixed_noise")],
    ),
    "3. learned pruning beats training-free pruning at the same budget": (
        "better", [("lightvla", "random_k"), ("lightvla", "text_topk"), ("lightvla", "fastv")],
    ),
}  # fmt: skip
KEPT_COMPARISONS = [
    ("lightvla", "lightvla_no_noise"), ("lightvla", "lightvla_fixed_noise"), ("lightvla", "lightvla_gumbel"),
]  # fmt: skip


def claims(results: dict[str, list[dict]]) -> dict:
    """The paper's four claims on this study's episodes: paired comparisons on the same initial states, a verdict per
    comparison and per claim, the kept-token differences behind claim 2, and the per-task kept tokens of claim 4."""
    from experiments.robot.libero import study_statistics as st

    out = {}
    for claim, (rule, pairs) in CLAIMS.items():
        rows = []
        for a, b in pairs:
            if a in results and b in results:
                comparison = st.compare_success(results[a], results[b], a, b)
                rows.append({**comparison.as_dict(), "verdict": getattr(st, rule)(comparison)})
        verdicts = {r["verdict"] for r in rows}
        overall = "supported" if verdicts == {"supported"} else next(
            (v for v in verdicts if v.startswith("not supported")), "not distinguishable at this scale"
        )
        out[claim] = {"comparisons": rows, "verdict": overall if rows else "not measured"}
    kept = [
        st.compare_kept(results[a], results[b], a, b).as_dict()
        for a, b in KEPT_COMPARISONS if a in results and b in results
    ]  # fmt: skip
    out["2. decaying noise beats no noise and fixed noise"]["kept_tokens"] = kept
    by_task = st.kept_tokens_by_task(results["lightvla"])
    verdict = "supported" if by_task["p_value"] < 0.05 else "not distinguishable at this scale"
    out["4. the number of kept tokens adapts to the task"] = {**by_task, "verdict": verdict}
    return out


def claim_lines(found: dict) -> list[str]:
    lines = ["## Claims (paired on the same initial states)", "",
             "| claim | policy vs | success difference (95% CI) | solved by one only | McNemar p | verdict |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for claim, result in found.items():
        for row in result.get("comparisons", []):
            low, high = row["ci95"]
            lines.append(
                f"| {claim.split('.')[0]} | {row['a']} vs {row['b']} | {100 * row['difference']:+.1f} points "
                f"({100 * low:+.1f} to {100 * high:+.1f}) | {row['a_only']} / {row['b_only']} | {row['p_value']:.3f} | "
                f"{row['verdict']} |"
            )
    lines.append("")
    for claim, result in found.items():
        lines.append(f"- **{claim}**: {result['verdict']}.")
        for row in result.get("kept_tokens", []):
            low, high = row["ci95"]
            difference = f"{row['difference']:+.1f} ({low:+.1f} to {high:+.1f})"
            lines.append(f"  Kept tokens {row['a']} − {row['b']}: {difference}.")
        if "tasks" in result:
            per_task = ", ".join(f"{t} {v['mean']:.1f} ± {v['sd']:.1f}" for t, v in result["tasks"].items())
            lines.append(f"  LightVLA's kept tokens per task: {per_task}; Kruskal-Wallis H = {result['h']:.2f}, "
                         f"p = {result['p_value']:.3g}.")  # fmt: skip
    return lines


def write_report(cfg: StudyConfig, table: dict, speed: dict, wall: dict[str, float], found: dict) -> None:
    payload = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
               "wall_seconds": wall, "results": table, "claims": found, "efficiency": speed}  # fmt: skip
    write_text_atomic(cfg.out_dir / "results.json", json.dumps(payload, indent=1))
    lines = [
        f"# LightVLA study on `{cfg.preset}` ({', '.join(cfg.tasks)}; {cfg.trials_per_task} episodes per task)",
        "",
        "| setting | task | success (95% CI) | kept visual tokens | GFLOPs (× OFT) | latency ms (× OFT) |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in table.items():
        for task, row in rows.items():
            ci = f"{row['successes']}/{row['episodes']} = {row['success']:.0%} ({row['ci95'][0]:.0%}–{row['ci95'][1]:.0%})"
            kept = f"{row['kept_mean']:.1f} ± {row['kept_sd']:.1f}"
            cost = speed.get(name, {}) if task == "all" else {}
            flops = f"{cost['gflops']:.2f} ({cost['flops_x']:.2f}×)" if cost else ""
            latency = f"{cost['latency_ms']:.1f} ({cost['latency_x']:.2f}×)" if cost else ""
            lines.append(f"| {name if task == 'all' else ''} | {task} | {ci} | {kept} | {flops} | {latency} |")
    stages = ", ".join(f"{stage} {seconds / 60:.0f} min" for stage, seconds in wall.items())
    lines += ["", *claim_lines(found)]
    lines += ["", f"Wall time {sum(wall.values()) / 3600:.2f} h ({stages}). Figures: `figures/`."]
    write_text_atomic(cfg.out_dir / "results.md", "\n".join(lines) + "\n")


def figures(cfg: StudyConfig, results: dict[str, list[dict]], table: dict) -> None:
    from experiments.robot.libero.eval_reports import plot_token_statistics
    from prismatic.plotting import pyplot, save_figure
    from prismatic.training.metrics import plot_curves, read_metrics

    folder = cfg.out_dir / "figures"
    schedules = [n for n in SETTINGS if n.startswith("lightvla")]
    plot_curves(
        {str(cfg.run_dir(n)): read_metrics(cfg.run_dir(n)) for n in schedules}, folder / "kept_tokens_vs_step.png"
    )
    fig, ax = pyplot().subplots(figsize=(5.2, 3.6))
    for name, rows in table.items():
        row = rows["all"]
        ax.errorbar(row["kept_mean"], row["success"], yerr=[[row["success"] - row["ci95"][0]], [row["ci95"][1] - row["success"]]],
                    fmt="o", capsize=3, label=name)  # fmt: skip
    ax.set(xscale="log", xlabel="kept visual tokens per query (log)", ylabel="success rate",
           title="success vs kept tokens (95% CI)")  # fmt: skip
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, folder / "success_vs_kept_tokens.png")
    plot_token_statistics(results["lightvla"], folder / "kept_tokens_per_task.png")
    videos = sorted((cfg.out_dir / "eval" / "rollouts").rglob("*success=True--kept_patches.mp4"))
    lightvla_videos = [v for v in videos if "--lightvla" in v.parent.name or v.parent.name.startswith("lightvla")]
    if lightvla_videos:
        shutil.copyfile(lightvla_videos[0], folder / "lightvla_success_kept_patches.mp4")


class StageClock:
    """Wall time per stage, summed over invocations (a resumed study reports its whole cost), kept beside the results."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        self.start = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.start
        self.start = now
        write_text_atomic(self.path, json.dumps(self.seconds, indent=1))


def run_study(cfg: StudyConfig) -> dict:
    from prismatic.policy.presets import make_config

    clock = StageClock(cfg.out_dir / "wall_seconds.json")
    log(f"{cfg.dataset_name}: {cfg.tasks} -> {cfg.out_dir}")
    make_demos(cfg)
    clock.lap("demos")
    train_all(cfg)
    clock.lap("training")
    results = evaluate_all(cfg)
    clock.lap("evaluation")
    config = make_config(cfg.preset)
    num_patches = (config.image_sizes[0] // config.timm_model_overrides[0].get("patch_size", 14)) ** 2 * 2
    table = tabulate(results, num_patches)
    speed = efficiency(cfg, results)
    clock.lap("flops and latency")
    found = claims(results)
    write_report(cfg, table, speed, clock.seconds, found)
    figures(cfg, results, table)
    log(f"done: {cfg.out_dir / 'results.md'}")
    return {"results": table, "claims": found, "efficiency": speed, "wall_seconds": clock.seconds}
