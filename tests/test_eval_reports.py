"""Token statistics and run summaries from evaluation JSON lines."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.robot.libero.eval_reports import ALL_TASKS, load_records, run_summary, token_statistics

ROOT = Path(__file__).resolve().parents[1]


def episode(suite, task_id, kept, success=True, **extra):
    record = {"suite": suite, "task_id": task_id, "task": f"task {task_id}", "trial": 0, "success": success}
    record["kept_tokens"] = kept
    record["kept_tokens_mean"] = float(np.mean(kept)) if kept else None
    record["latency_ms_mean"] = 20.0
    return record | extra


@pytest.fixture
def results(tmp_path):
    records = [
        episode("libero_spatial", 0, [70, 80, 90]),
        episode("libero_spatial", 0, [60]),
        episode("libero_spatial", 1, [100, 110], success=False),
        episode("libero_object", 3, None, kept_tokens_mean=50.0),  # written before per-query counts were kept
    ]
    path = tmp_path / "EVAL-mixed-run.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_statistics_per_task_and_suite(results):
    rows = {(r.suite, r.task_id): r for r in token_statistics(load_records(results))}
    assert list(rows) == [
        ("libero_object", 3), ("libero_object", ALL_TASKS), ("libero_spatial", 0), ("libero_spatial", 1),
        ("libero_spatial", ALL_TASKS),
    ]  # fmt: skip
    task0 = rows[("libero_spatial", 0)]
    assert (task0.episodes, task0.queries, task0.min, task0.max) == (2, 4, 60, 90)
    assert task0.mean == pytest.approx(75.0) and task0.sd == pytest.approx(np.std([70, 80, 90, 60]))
    suite = rows[("libero_spatial", ALL_TASKS)]
    assert suite.queries == 6 and suite.mean == pytest.approx(np.mean([70, 80, 90, 60, 100, 110]))
    assert rows[("libero_object", 3)].queries == 1 and rows[("libero_object", 3)].mean == 50.0


def test_unpruned_runs_give_no_rows():
    assert token_statistics([episode("libero_goal", 0, None)]) == []


def test_script_prints_the_table_and_draws_the_plot(results, tmp_path):
    plot = tmp_path / "kept.png"
    out = subprocess.run(
        [sys.executable, "scripts/token_statistics.py", str(results), "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "75.0 ± 11.2" in out and "libero_spatial" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_summary(results):
    summary = run_summary(results)
    assert (summary["run"], summary["episodes"], summary["success"], summary["errors"]) == ("mixed-run", 4, 3, 0)


def test_bad_files_get_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no evaluation results"):
        load_records(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"suite": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 is not a JSON line"):
        load_records(bad)



def test_kept_patch_video_darkens_the_dropped_patches(tmp_path):
    import imageio.v2 as imageio

    from experiments.robot.libero.visualize import save_pruning_video

    white = {"full_image": np.full((64, 64, 3), 255, np.uint8), "wrist_image": np.full((64, 64, 3), 255, np.uint8)}
    steps = [(white, [0]), (white, [0, 63]), (white, [64 + 63])]  # 8 x 8 patches per camera, 128 in all
    path = save_pruning_video(tmp_path / "v.mp4", steps, num_patches=128, num_images=2)
    frames = np.array([f for f in imageio.get_reader(path)]).astype(int)
    assert frames.shape == (3, 224, 448, 3)
    top_left, bottom_right = (slice(4, 24), slice(4, 24)), (slice(200, 220), slice(200, 220))
    assert frames[0][top_left].mean() > 200 and frames[0][bottom_right].mean() < 120  # kept bright, dropped dark
    assert frames[1][bottom_right].mean() > 200  # patch 63 kept in the second step
    wrist_bottom_right = (slice(200, 220), slice(424, 444))
    assert frames[2][wrist_bottom_right].mean() > 200 and frames[2][top_left].mean() < 120
