"""The README's main command, for real, with tiny numbers: every stage of scripts/quickstart.sh runs, in order, and
a second run resumes instead of redoing work."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_quickstart(out: Path, **knobs: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ, "VENV": sys.prefix, "QUICKSTART_DIR": str(out), "DEMOS": "1", "STAGE1_STEPS": "4",
        "STAGE2_STEPS": "4", "TRIALS": "1", "MAX_STEPS": "30", **knobs,
    }  # fmt: skip
    return subprocess.run(["bash", "scripts/quickstart.sh"], cwd=ROOT, env=env, capture_output=True, text=True)


def finished(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_quickstart_runs_both_stages_and_compares_them(tmp_path):
    out = tmp_path / "qs"
    printed = finished(run_quickstart(out))
    for stage in ("setup", "demos", "stage 1", "stage 2", "evaluation"):
        assert f"[{stage}: " in printed, stage
    stage1, stage2 = metrics(out / "runs" / "oft"), metrics(out / "runs" / "lightvla")
    assert stage1[-1]["step"] == 4 and stage2[-1]["step"] == 4
    assert all("kept_visual_tokens" not in r and r["noise_scale"] == 0 for r in stage1)  # OFT: no pruning, no noise
    assert any(r.get("kept_visual_tokens") for r in stage2)  # stage 2 prunes and logs what it keeps
    assert json.loads((out / "runs" / "lightvla" / "config.json").read_text())["prune_visual_tokens"] is True
    for run in ("oft", "lightvla"):  # evaluated with temporal ensembling, the default
        episodes = (out / "eval" / f"EVAL-libero_object-{run}--seed7--temporal_ensembling.jsonl").read_text()
        assert len(episodes.splitlines()) == 1 and json.loads(episodes.splitlines()[0])["task_id"] == 0
        settings = out / "eval" / f"EVAL-libero_object-{run}--seed7--temporal_ensembling.settings.json"
        assert json.loads(settings.read_text())["temporal_ensembling"] is True
    assert (out / "training_curves.png").stat().st_size > 0 and (out / "eval" / "kept_tokens.png").stat().st_size > 0
    assert "quickstart wall time" in printed

    weights = (out / "runs" / "lightvla" / "model.safetensors").stat().st_mtime_ns
    again = finished(run_quickstart(out))  # everything finished: nothing is trained or evaluated again
    assert (out / "runs" / "lightvla" / "model.safetensors").stat().st_mtime_ns == weights
    results = out / "eval" / "EVAL-libero_object-lightvla--seed7--temporal_ensembling.jsonl"
    assert len(results.read_text().splitlines()) == 1
    assert "quickstart wall time" in again


@pytest.mark.slow
def test_quickstart_trains_from_a_lerobot_export(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTVLA_CACHE", str(tmp_path / "cache"))  # a fresh cache: the first training run converts
    wrong = run_quickstart(tmp_path / "wrong", DATA_FORMAT="parquet")
    assert wrong.returncode != 0 and "DATA_FORMAT must be hdf5 or lerobot" in wrong.stderr
    wrong = run_quickstart(tmp_path / "wrong", TEMPORAL_ENSEMBLING="yes")
    assert wrong.returncode != 0 and "TEMPORAL_ENSEMBLING must be True or False" in wrong.stderr

    out = tmp_path / "qs"  # also the other evaluation: the newest chunk's first action at every step
    printed = finished(run_quickstart(out, DATA_FORMAT="lerobot", TEMPORAL_ENSEMBLING="False"))
    info = json.loads((out / "lerobot" / "libero_object_no_noops" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 1
    assert "converting LeRobot dataset" in printed  # stage 1 read the LeRobot folder, not the HDF5 demos
    converted = list((tmp_path / "cache" / "lerobot_hdf5").glob("libero_object_no_noops-*"))
    assert len(converted) == 1  # converted once: stage 2 reused the copy
    assert printed.count("converting LeRobot dataset") == 1
    for run in ("oft", "lightvla"):
        assert json.loads((out / "runs" / run / "config.json").read_text())["render_quality"] == "fast"
        assert len((out / "eval" / f"EVAL-libero_object-{run}--seed7.jsonl").read_text().splitlines()) == 1
