"""scripts/gpu_check.py, the prepared GPU check, in its CPU mode (tiny preset): it runs end to end and reports."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_mode_prints_its_table(tmp_path):
    import json

    out = tmp_path / "check.json"
    command = [
        sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--preset", "tiny", "--device", "cpu",
        "--repeats", "2", "--warmup", "1", "--train_steps", "1", "--train_batch_size", "2", "--output_json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for row in ("predict_action, pruned", "predict_action, unpruned", "speed-up pruned vs unpruned",
                "attention kernel: LLM", "attention kernel: pruner scores", "attention kernel: vision backbone",
                "LoRA step with grad. checkpointing", "training throughput without grad. checkpointing"):  # fmt: skip
        assert f"| {row}" in proc.stdout, row
    result = json.loads(out.read_text())
    assert 0 < result["pruned"]["kept_tokens"] < result["unpruned"]["kept_tokens"] == 512
    assert all(t["samples_per_s"] > 0 for t in result["train"].values())
    assert "flash" in result["kernels"]["LLM"]  # the fused kernel, not the math fallback
