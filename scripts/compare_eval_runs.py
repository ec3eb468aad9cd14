"""Side-by-side summary of evaluation runs (the JSONL files run_libero_eval.py writes).

    python scripts/compare_eval_runs.py runs/quickstart/eval/EVAL-*.jsonl

One row per file: episodes, success rate, kept visual tokens (mean ± sd), policy latency per query, and the latency
relative to the first file.
"""

import json
import sys
from pathlib import Path

import numpy as np


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def row(path: Path) -> dict:
    records = load(path)
    kept = [r["kept_tokens_mean"] for r in records if r.get("kept_tokens_mean") is not None]
    latency = [r["latency_ms_mean"] for r in records if r.get("latency_ms_mean") is not None]
    return {
        "run": path.stem.removeprefix("EVAL-"),
        "episodes": len(records),
        "success": sum(r["success"] for r in records),
        "kept": (float(np.mean(kept)), float(np.std(kept))) if kept else None,
        "latency": float(np.median(latency)) if latency else None,
        "errors": sum(r.get("error") is not None for r in records),
    }


def main(paths: list[str]) -> list[dict]:
    if not paths:
        sys.exit("usage: compare_eval_runs.py EVAL-....jsonl [EVAL-....jsonl ...]")
    rows = [row(Path(p)) for p in paths]
    base = rows[0]["latency"]
    print(f"{'run':<60} {'success':>9} {'kept visual tokens':>19} {'latency/query':>14} {'vs first':>8}")
    for r in rows:
        kept = f"{r['kept'][0]:.1f} ± {r['kept'][1]:.1f}" if r["kept"] else "-"
        latency = f"{r['latency']:.1f} ms" if r["latency"] is not None else "-"
        ratio = f"{r['latency'] / base:.2f}x" if r["latency"] and base else "-"
        errors = f"  ({r['errors']} errors)" if r["errors"] else ""
        print(f"{r['run'][:60]:<60} {r['success']:>4}/{r['episodes']:<4} {kept:>19} {latency:>14} {ratio:>8}{errors}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
