"""The study's statistics against hand computations (exact binomial tails, a Kruskal-Wallis H by ranks)."""

import math

import numpy as np
import pytest

from experiments.robot.libero import study_statistics as st


def episodes(successes: list[bool], kept: list[float] | None = None, suite: str = "libero_object", task: int = 0):
    return [
        {"suite": suite, "task_id": task, "trial": i, "success": s, "kept_tokens": None if kept is None else [kept[i]]}
        for i, s in enumerate(successes)
    ]


def test_exact_mcnemar_is_the_two_sided_binomial_tail_of_the_discordant_pairs():
    assert st.mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)  # all six discordant pairs one way: 2 * 0.5^6
    assert st.mcnemar_exact_p(1, 5) == pytest.approx(2 * (1 + 6) / 64)
    assert st.mcnemar_exact_p(3, 3) == 1.0 and st.mcnemar_exact_p(0, 0) == 1.0


def test_paired_success_comparison_counts_discordant_states_and_brackets_the_difference():
    a = episodes([True] * 12 + [False] * 8) + episodes([True] * 5 + [False] * 15, task=1)
    b = episodes([True] * 6 + [False] * 14) + episodes([True] * 5 + [False] * 15, task=1)
    comparison = st.compare_success(list(reversed(a)), b, "a", "b")  # pairs by initial state, not by order
    assert (comparison.pairs, comparison.a_only, comparison.b_only) == (40, 6, 0)
    assert comparison.difference == pytest.approx(6 / 40)
    low, high = comparison.ci95
    assert low < 6 / 40 < high and low > 0  # six states one way, none the other
    assert comparison.p_value == pytest.approx(2 / 64)
    assert st.better(comparison) == "supported" and st.better(st.compare_success(b, a, "b", "a")).startswith("not supp")
    same = st.compare_success(a, a, "a", "a")
    assert same.ci95 == (0.0, 0.0) and same.p_value == 1.0 and st.better(same) == "not distinguishable at this scale"
    with pytest.raises(ValueError, match="different initial states"):
        st.compare_success(a, b[:-1], "a", "b")


def test_the_bootstrap_resamples_within_each_task():
    """Task 0 always differs by 1, task 1 never: resampling states within tasks keeps the mean at exactly 0.5 (a
    bootstrap over all states would move it)."""
    differences = np.array([1.0] * 10 + [0.0] * 10)
    assert st.bootstrap_interval(differences, np.array([0] * 10 + [1] * 10)) == (0.5, 0.5)
    low, high = st.bootstrap_interval(differences, np.zeros(20, int))
    assert low < 0.5 < high


def test_kept_tokens_by_task_is_kruskal_wallis_on_episode_means():
    records = episodes([True] * 3, [1, 2, 3]) + episodes([True] * 3, [4, 5, 6], task=1)
    records += episodes([True] * 3, [7, 8, 9], suite="libero_spatial")
    result = st.kept_tokens_by_task(records)
    ranks = {"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9]}  # no ties: H = 12 / (N (N + 1)) sum R^2 / n - 3 (N + 1)
    h = 12 / (9 * 10) * sum(sum(r) ** 2 / 3 for r in ranks.values()) - 3 * 10
    assert result["h"] == pytest.approx(h) == pytest.approx(7.2)
    assert result["p_value"] == pytest.approx(math.exp(-h / 2))  # chi-square with 2 degrees of freedom
    assert result["tasks"]["libero_object:1"] == {"mean": 5.0, "sd": pytest.approx(np.std([4, 5, 6])), "episodes": 3}


def test_kept_token_comparison_and_the_no_loss_verdict():
    a = episodes([True] * 10, [10.0] * 10)
    b = episodes([True] * 9 + [False], [40.0] * 10)
    kept = st.compare_kept(a, b, "a", "b")
    assert kept.difference == -30.0 and kept.ci95 == (-30.0, -30.0)
    assert st.no_worse(st.compare_success(a, b, "a", "b")) == "supported"
    worse = st.compare_success(episodes([False] * 10), episodes([True] * 10), "a", "b")
    assert st.no_worse(worse) == "not supported (it loses success)"
    with pytest.raises(ValueError, match="without pruning"):
        st.compare_kept(episodes([True]), episodes([True]), "a", "b")


def test_wilson_interval_matches_the_closed_form():
    # 5/10: p = 0.5, z = 1.96 -> centre 0.5, half width 1.96 * sqrt(0.025 + 0.0096) / 1.384 = 0.2634
    low, high = st.wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert st.wilson_interval(20, 20)[1] == 1.0
    low, high = st.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(1.96**2 / (10 + 1.96**2))  # at 0/n the upper end is z^2 / (n + z^2)
    assert st.wilson_interval(0, 0) == (0.0, 1.0)
