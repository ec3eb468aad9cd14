"""The study (experiments/robot/libero/study.py): its statistics, its report, and a small real run of its stages."""

import json

import numpy as np
import pytest

from experiments.robot.libero import study
from experiments.robot.libero.study_statistics import wilson_interval


def test_config_reads_tasks_and_names_the_joint_dataset():
    cfg = study.StudyConfig(tasks=["libero_object:0", "libero_spatial:0", "libero_object:1"])
    assert cfg.suites == {"libero_object": [0, 1], "libero_spatial": [0]}
    assert cfg.dataset_name == "libero_object_no_noops+libero_spatial_no_noops"
    with pytest.raises(ValueError, match="suite:task_id"):
        study.StudyConfig(tasks=["libero_object"])
    for typo in ("libero_spatial0", "libero_spatail:0"):  # a misspelt key would otherwise be silently unused
        with pytest.raises(ValueError, match=f"--more_demos .*{typo}"):
            study.StudyConfig(more_demos={typo: 80})
    assert study.StudyConfig(tasks=["libero_object:0"]).demos_for("libero_object", 0) == 50  # other keys: unused
    quick = study.StudyConfig(quick=True)
    assert quick.stage1_steps < study.StudyConfig().stage1_steps and quick.trials_per_task == 2
    assert (cfg.demos_for("libero_spatial", 0), cfg.demos_for("libero_object", 1)) == (80, 50)  # the weak task more
    assert quick.demos_for("libero_spatial", 0) == quick.demos_per_task == 4


def test_every_policy_is_evaluated_once_and_count_weighting_only_when_asked():
    assert sorted(study.EVAL_ORDER) == sorted({study.STAGE1, *study.SETTINGS, *study.DERIVED})
    assert study.EVAL_ORDER.index("lightvla") < study.EVAL_ORDER.index("random_k")  # baselines need its budget
    assert "lightvla_count" not in study.policies(study.StudyConfig())
    with_count = study.policies(study.StudyConfig(evaluate_count_weighting=True))
    assert with_count == [study.STAGE1, *study.SETTINGS, *study.DERIVED]  # the stage-1 base is evaluated too


def episode(task_id, success, kept, trial=0):
    return {"suite": "libero_object", "task_id": task_id, "trial": trial, "task": f"t{task_id}", "success": success,
            "kept_tokens": kept}  # fmt: skip


def test_table_report_and_figures(tmp_path):
    cfg = study.StudyConfig(out_dir=tmp_path, tasks=["libero_object:0", "libero_object:1"])
    results = {
        "lightvla": [episode(0, True, [10, 12]), episode(0, False, [14], trial=1), episode(1, True, [20, 22])],
        "oft": [episode(0, True, None), episode(0, True, None, trial=1), episode(1, False, None)],
    }
    table = study.tabulate(results, num_patches=128)
    assert table["lightvla"]["all"]["successes"] == 2 and table["lightvla"]["all"]["episodes"] == 3
    assert table["lightvla"]["libero_object:0"]["kept_mean"] == pytest.approx(12.0)
    assert table["lightvla"]["all"]["kept_sd"] == pytest.approx(np.std([10, 12, 14, 20, 22]))
    assert table["oft"]["all"]["kept_mean"] == 128.0  # no pruning: every patch
    speed = {n: {"gflops": g, "latency_ms": m, "flops_x": g / 2, "latency_x": m / 40} for n, g, m in
             (("lightvla", 1.0, 20.0), ("oft", 2.0, 40.0))}  # fmt: skip
    found = study.claims(results)
    assert found["3. learned pruning beats training-free pruning at the same budget"]["verdict"] == "not measured"
    claim1 = found["1. LightVLA keeps a small fraction of the visual tokens without losing success"]
    assert claim1["comparisons"][0]["difference"] == 0.0 and claim1["comparisons"][0]["a_only"] == 1
    study.write_report(cfg, table, speed, {"demos": 60.0, "training": 3000.0}, found)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"]["lightvla"]["all"]["ci95"] == list(wilson_interval(2, 3))
    assert saved["claims"]["4. the number of kept tokens adapts to the task"]["tasks"]["libero_object:1"]["mean"] == 21
    markdown = (tmp_path / "results.md").read_text()
    assert "| lightvla | all | 2/3 = 67% (21%–94%) | 15.6 ± 4.6 | 1.00 (0.50×) | 20.0 (0.50×) |" in markdown
    assert "| 1 | lightvla vs oft | +0.0 points" in markdown and "Kruskal-Wallis H = " in markdown
    assert "Wall time 0.85 h (demos 1 min, training 50 min)" in markdown


@pytest.mark.slow
def test_stages_run_and_resume(tmp_path, monkeypatch):
    """Every stage for real on one task with tiny numbers; a second call redoes nothing."""
    monkeypatch.setattr("prismatic.vla.datasets.statistics.CACHE_DIR", tmp_path / "cache")
    cfg = study.StudyConfig(
        out_dir=tmp_path, tasks=["libero_object:0"], demos_per_task=1, demo_resolution=64, stage1_steps=3,
        stage2_steps=2, batch_size=4, trials_per_task=1, num_workers=1, max_episode_steps=6, latency_repeats=1,
        evaluate_count_weighting=True,
    )  # fmt: skip
    first = study.run_study(cfg)
    rows = first["results"]
    assert set(rows) == {study.STAGE1, *study.SETTINGS, *study.DERIVED}
    assert all(rows[name]["all"]["episodes"] == 1 for name in rows)
    budget = rows["random_k"]["all"]["kept_mean"]
    assert budget == pytest.approx(round(rows["lightvla"]["all"]["kept_mean"]))  # baselines at LightVLA's budget
    assert first["efficiency"]["oft"]["flops_x"] == 1.0 and first["efficiency"]["lightvla"]["flops_x"] < 1.0
    # weighting kept patches by their picks changes what is computed, not how much
    assert first["efficiency"]["lightvla_count"]["gflops"] == first["efficiency"]["lightvla"]["gflops"]
    for name in ("results.json", "results.md", "figures/kept_tokens_vs_step.png", "figures/success_vs_kept_tokens.png",
                 "figures/kept_tokens_per_task.png"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    trained = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/config.json")}
    evaluated = sorted((tmp_path / "eval").glob("EVAL-*.jsonl"))
    assert evaluated and all(p.name.endswith("--temporal_ensembling.jsonl") for p in evaluated)  # the default
    lines = {p: p.read_text() for p in evaluated}
    study.run_study(cfg)  # resumes: nothing retrained, nothing re-evaluated
    assert {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/config.json")} == trained
    assert {p: p.read_text() for p in evaluated} == lines
