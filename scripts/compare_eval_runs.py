"""Side-by-side summary of evaluation runs (the JSONL files run_libero_eval.py writes).

    python scripts/compare_eval_runs.py runs/quickstart/eval/EVAL-*.jsonl

One row per file: episodes, success rate, kept visual tokens (mean ± sd), policy latency per query, and the latency
relative to the first file.
"""

import argparse

from experiments.robot.libero.eval_reports import run_summary


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="EVAL-<suite>-<run>.jsonl files written by run_libero_eval.py")
    rows = [run_summary(p) for p in parser.parse_args(argv).results]
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
    main()
