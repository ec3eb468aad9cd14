"""The study's statistics: success rates with intervals, paired comparisons of two policies on the same initial
states, and whether the kept visual tokens differ between tasks.

Every policy of the study is evaluated from the same official initial states, so two policies are compared episode
by episode: an initial state one policy solves and the other does not is evidence, one both solve (or both fail)
says nothing about their difference. That is what the exact McNemar test and the paired bootstrap use; two
independent intervals that overlap would throw it away.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

STATE = ("suite", "task_id", "trial")  # what identifies an initial state in an episode record
RESAMPLES = 10_000
NO_LOSS_MARGIN = 0.10  # claim 1 ("without losing success"): the paired interval must stay above -10 points


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a success rate (Wilson score interval: sensible at 0/n and n/n)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar test: under "equally good", each discordant pair goes either way with probability 1/2."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(a: list[dict], b: list[dict], value) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value of a, value of b, task index) per initial state both policies ran; they must have run the same ones."""
    by_state_a, by_state_b = ({tuple(r[k] for k in STATE): r for r in records} for records in (a, b))
    if by_state_a.keys() != by_state_b.keys():
        missing = sorted(by_state_a.keys() ^ by_state_b.keys())[:5]
        raise ValueError(f"paired comparison of policies run on different initial states (e.g. {missing})")
    states = sorted(by_state_a)
    tasks = {task: i for i, task in enumerate(sorted({s[:2] for s in states}))}
    return (
        np.array([value(by_state_a[s]) for s in states], float),
        np.array([value(by_state_b[s]) for s in states], float),
        np.array([tasks[s[:2]] for s in states]),
    )


def bootstrap_interval(differences: np.ndarray, strata: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean paired difference, resampling initial states within each task."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    means = np.zeros(RESAMPLES)
    for group in groups:
        picks = group[rng.integers(0, len(group), (RESAMPLES, len(group)))]
        means += differences[picks].sum(axis=1)
    means /= len(differences)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class Comparison:
    """Policy a against policy b on the same initial states."""

    a: str
    b: str
    pairs: int
    difference: float  # mean of a - b: success rate in points / 100, or kept tokens
    ci95: tuple[float, float]
    a_only: int | None = None  # success comparisons: states a solved and b did not
    b_only: int | None = None
    p_value: float | None = None  # exact McNemar

    def as_dict(self) -> dict:
        return asdict(self)


def compare_success(a: list[dict], b: list[dict], name_a: str, name_b: str) -> Comparison:
    success_a, success_b, tasks = paired(a, b, lambda r: bool(r["success"]))
    a_only = int(((success_a == 1) & (success_b == 0)).sum())
    b_only = int(((success_a == 0) & (success_b == 1)).sum())
    differences = success_a - success_b
    return Comparison(
        name_a, name_b, len(differences), float(differences.mean()), bootstrap_interval(differences, tasks),
        a_only, b_only, mcnemar_exact_p(a_only, b_only),
    )  # fmt: skip


def episode_kept_mean(record: dict) -> float:
    kept = record.get("kept_tokens") or []
    if not kept:
        raise ValueError("kept-token comparison of an episode evaluated without pruning")
    return float(np.mean(kept))


def compare_kept(a: list[dict], b: list[dict], name_a: str, name_b: str) -> Comparison:
    """Mean kept visual tokens per query of a minus b, per initial state (an episode's mean over its queries)."""
    kept_a, kept_b, tasks = paired(a, b, episode_kept_mean)
    differences = kept_a - kept_b
    interval = bootstrap_interval(differences, tasks)
    return Comparison(name_a, name_b, len(differences), float(differences.mean()), interval)


def kept_tokens_by_task(records: list[dict]) -> dict:
    """Do the kept tokens differ between tasks? Kruskal-Wallis test on the episodes' mean kept tokens (an episode
    is the unit: its queries are not independent), with each task's mean and sd."""
    from scipy.stats import kruskal

    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(f"{r['suite']}:{r['task_id']}", []).append(episode_kept_mean(r))
    statistic, p_value = kruskal(*groups.values()) if len(groups) > 1 else (0.0, 1.0)
    return {
        "h": float(statistic), "p_value": float(p_value),
        "tasks": {t: {"mean": float(np.mean(v)), "sd": float(np.std(v)), "episodes": len(v)} for t, v in groups.items()},
    }  # fmt: skip


def better(comparison: Comparison) -> str:
    """Verdict on "a is better than b": the paired interval above 0, below 0, or straddling it."""
    low, high = comparison.ci95
    if low > 0:
        return "supported"
    if high < 0:
        return "not supported (the opposite holds)"
    return "not distinguishable at this scale"


def no_worse(comparison: Comparison, margin: float = NO_LOSS_MARGIN) -> str:
    """Verdict on "a loses no success against b": the paired interval's lower end above -margin."""
    low, high = comparison.ci95
    if low > -margin:
        return "supported"
    if high < 0:
        return "not supported (it loses success)"
    return "not distinguishable at this scale"
