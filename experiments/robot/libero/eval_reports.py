"""Reports over evaluation results (the JSON lines `run_libero_eval.py` writes, one per episode).

* ``run_summary``: one evaluation run in a line: episodes, successes, kept visual tokens, latency, errors.
* ``token_statistics``: kept visual tokens per policy query, per suite and task (mean ± sd, min, max), as the
  LightVLA paper reports them per suite. Files written before per-query counts were recorded contribute one value
  per episode (its mean).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prismatic.plotting import pyplot, save_figure

ALL_TASKS = -1  # task_id of a suite's summary row


def load_records(path: Path) -> list[dict]:
    """Every episode record of one results file; a clear error for a file that is missing or not JSON lines."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation results at {path}; run_libero_eval.py writes EVAL-<suite>-<run>.jsonl")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not a JSON line ({err}); is this an EVAL-*.jsonl file?") from None
    return records


def run_summary(path: Path) -> dict:
    records = load_records(path)
    kept = [r["kept_tokens_mean"] for r in records if r.get("kept_tokens_mean") is not None]
    latency = [r["latency_ms_mean"] for r in records if r.get("latency_ms_mean") is not None]
    return {
        "run": Path(path).stem.removeprefix("EVAL-"),
        "episodes": len(records),
        "success": sum(r["success"] for r in records),
        "kept": (float(np.mean(kept)), float(np.std(kept))) if kept else None,
        "latency": float(np.median(latency)) if latency else None,
        "errors": sum(r.get("error") is not None for r in records),
    }


@dataclass(frozen=True)
class TokenStatistics:
    suite: str
    task_id: int  # ALL_TASKS for the suite's row
    task: str
    episodes: int
    queries: int
    mean: float
    sd: float
    min: float
    max: float


def kept_per_query(record: dict) -> list[float]:
    if record.get("kept_tokens"):
        return [float(k) for k in record["kept_tokens"]]
    return [float(record["kept_tokens_mean"])] if record.get("kept_tokens_mean") is not None else []


def _statistics(suite: str, task_id: int, task: str, records: list[dict]) -> TokenStatistics | None:
    values = np.array([k for r in records for k in kept_per_query(r)])
    if values.size == 0:
        return None
    return TokenStatistics(
        suite, task_id, task, len(records), int(values.size),
        float(values.mean()), float(values.std()), float(values.min()), float(values.max()),
    )  # fmt: skip


def token_statistics(records: list[dict]) -> list[TokenStatistics]:
    """Rows per (suite, task) in order, each suite followed by its all-tasks row; runs without pruning give none."""
    by_task: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        by_task.setdefault((r["suite"], r["task_id"]), []).append(r)
    rows = []
    for suite in sorted({suite for suite, _ in by_task}):
        tasks = sorted(t for s, t in by_task if s == suite)
        for task_id in tasks:
            group = by_task[(suite, task_id)]
            rows.append(_statistics(suite, task_id, group[0]["task"], group))
        rows.append(_statistics(suite, ALL_TASKS, "all tasks", [r for t in tasks for r in by_task[(suite, t)]]))
    return [row for row in rows if row is not None]


def format_token_statistics(rows: list[TokenStatistics]) -> str:
    lines = [f"{'suite':<16}{'task':>5}{'episodes':>9}{'queries':>9}{'kept mean ± sd':>17}{'min':>7}{'max':>7}  task"]
    for r in rows:
        task = "all" if r.task_id == ALL_TASKS else str(r.task_id)
        lines.append(
            f"{r.suite:<16}{task:>5}{r.episodes:>9}{r.queries:>9}{f'{r.mean:.1f} ± {r.sd:.1f}':>17}"
            f"{r.min:>7.0f}{r.max:>7.0f}  {r.task}"
        )
    return "\n".join(lines)


def plot_token_statistics(records: list[dict], path: Path) -> Path:
    """Box plot of kept tokens per query, one box per (suite, task); written atomically as PNG."""
    groups: dict[str, list[float]] = {}
    for r in sorted(records, key=lambda r: (r["suite"], r["task_id"])):
        groups.setdefault(f"{r['suite'].removeprefix('libero_')} {r['task_id']}", []).extend(kept_per_query(r))
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise ValueError("these results have no kept-token counts (evaluated without a pruner?)")
    fig, ax = pyplot().subplots(figsize=(max(4.0, 0.45 * len(groups) + 1.5), 3.2))
    ax.boxplot(list(groups.values()), showfliers=True)
    ax.set_xticks(range(1, len(groups) + 1), list(groups), rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("kept visual tokens per query")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def format_results(records: list[dict]) -> str:
    """Success, kept visual tokens and policy latency per task, and the overall success rate."""
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
