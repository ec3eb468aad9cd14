"""Kept visual tokens per suite and task from evaluation results (mean ± sd, min, max over policy queries).

    python scripts/token_statistics.py experiments/logs/EVAL-libero_*.jsonl [--plot kept_tokens.png]

Several files (e.g. one per suite) are pooled; `--plot` also draws a box plot per task.
"""

import argparse

from experiments.robot.libero.eval_reports import (
    format_token_statistics,
    load_records,
    plot_token_statistics,
    token_statistics,
)


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="EVAL-<suite>-<run>.jsonl files written by run_libero_eval.py")
    parser.add_argument("--plot", help="write a box plot of kept tokens per task to this PNG")
    args = parser.parse_args(argv)
    records = [r for path in args.results for r in load_records(path)]
    rows = token_statistics(records)
    if not rows:
        raise SystemExit("no kept-token counts in these results: were they evaluated with a pruner?")
    print(format_token_statistics(rows))
    if args.plot:
        print(f"box plot: {plot_token_statistics(records, args.plot)}")
    return rows


if __name__ == "__main__":
    main()
