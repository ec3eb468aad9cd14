"""The study's results: success with intervals and kept tokens per policy and task, the four claims as paired
comparisons with a verdict each, ``results.json`` / ``results.md``, and the figures."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from experiments.robot.libero.study_config import SETTINGS, StudyConfig
from prismatic.files import write_text_atomic


def success_and_kept_tokens(records: list[dict]) -> dict:
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
        rows = {"all": success_and_kept_tokens(records)}
        for key in sorted({(r["suite"], r["task_id"]) for r in records}):
            rows[f"{key[0]}:{key[1]}"] = success_and_kept_tokens(
                [r for r in records if (r["suite"], r["task_id"]) == key]
            )
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
        overall = (
            "supported"
            if verdicts == {"supported"}
            else next((v for v in verdicts if v.startswith("not supported")), "not distinguishable at this scale")
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
    from matplotlib import ticker

    from experiments.robot.libero.eval_reports import plot_token_statistics
    from prismatic.plotting import pyplot, save_figure
    from prismatic.training.metrics import plot_curves, read_metrics

    folder = cfg.out_dir / "figures"
    schedules = [n for n in SETTINGS if n.startswith("lightvla")]
    plot_curves(
        {str(cfg.run_dir(n)): read_metrics(cfg.run_dir(n)) for n in schedules}, folder / "kept_tokens_vs_step.png"
    )
    fig, ax = pyplot().subplots(figsize=(5.2, 3.6))
    drawn: list[tuple[float, float]] = []
    for (name, rows), marker in zip(table.items(), itertools.cycle("osD^vP*X<>")):
        row = rows["all"]
        point = (round(row["kept_mean"], 1), round(row["success"], 3))
        dodge = 1.04 ** drawn.count(point)  # policies on the same point (equal budget, equal success) side by side
        drawn.append(point)
        ax.errorbar(row["kept_mean"] * dodge, row["success"],
                    yerr=[[row["success"] - row["ci95"][0]], [row["ci95"][1] - row["success"]]],
                    fmt=marker, mfc="none", ms=7, capsize=3, label=name)  # fmt: skip
    ax.set(xscale="log", xlabel="kept visual tokens per query (log; equal points drawn side by side)",
           ylabel="success rate", title="success vs kept tokens (95% CI)")  # fmt: skip
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))  # 10, 20, 50, 100 written out
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, folder / "success_vs_kept_tokens.png")
    plot_token_statistics(results["lightvla"], folder / "kept_tokens_per_task.png")
    videos = sorted((cfg.out_dir / "eval" / "rollouts").rglob("*success=True--kept_patches.mp4"))
    lightvla_videos = [v for v in videos if "--lightvla" in v.parent.name or v.parent.name.startswith("lightvla")]
    if lightvla_videos:
        shutil.copyfile(lightvla_videos[0], folder / "lightvla_success_kept_patches.mp4")
