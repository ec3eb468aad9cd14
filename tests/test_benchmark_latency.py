"""scripts/benchmark_latency.py on the tiny preset: every pruner in one run, equal budgets, FLOPs, the JSON report."""

import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "benchmark_latency", Path(__file__).resolve().parents[1] / "scripts" / "benchmark_latency.py"
)
benchmark_latency = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark_latency)


def test_all_pruners_side_by_side(tmp_path, capsys):
    out = tmp_path / "latency.json"
    cfg = benchmark_latency.LatencyConfig(
        presets=["tiny"], repeats=2, warmup=0, batch_sizes=[1, 2], output_json=str(out), plot=str(tmp_path / "r.png")
    )
    [result] = benchmark_latency.main(cfg)
    rows = result["pruners"]
    assert list(rows) == ["none", "lightvla", "random_k", "text_topk", "fastv"]
    assert rows["none"]["kept_tokens"] == 512
    budget = result["budget"]
    assert rows["lightvla"]["kept_tokens"] == budget < 512  # the baselines' default budget is LightVLA's count
    assert all(rows[name]["kept_tokens"] == budget for name in ("random_k", "text_topk", "fastv"))
    assert all(rows[name]["gflops"] < rows["none"]["gflops"] for name in rows if name != "none")
    assert rows["fastv"]["gflops"] > rows["text_topk"]["gflops"]  # FastV's first layers see every token
    # each pruner call happens inside a timed call, so its median time is a part of the call's (not a race of timings)
    assert all(0 < r["pruner_ms"] < r["median_ms"] for r in rows.values())
    assert result["preprocess_ms"] > 0 and result["image_size"] == 224
    assert all(r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] for r in rows.values())
    assert set(result["batch_sweep"]["lightvla"]) == {1, 2}
    saved = json.loads(out.read_text())
    assert saved["results"][0]["budget"] == budget and saved["device"] == "cpu"
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "latency x" in printed and "batch sweep" in printed and "image preprocessing" in printed
