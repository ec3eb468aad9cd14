"""Loss, noise scale and kept visual tokens over the steps of training runs (their metrics.jsonl), as a table and a plot.

    python scripts/training_curves.py runs/quickstart/runs/lightvla [more run folders] --plot curves.png

The kept tokens are measured in eval mode (no noise) on a training batch every `--kept_tokens_log_freq` steps:
LightVLA's "prune smarter as it learns" is how this count moves as the noise decays.
"""

import argparse

from prismatic.training.metrics import format_curves, plot_curves, read_metrics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (or their metrics.jsonl files) written by finetune.py")
    parser.add_argument("--plot", help="write loss and kept tokens against the step to this PNG")
    parser.add_argument("--rows", type=int, default=12, help="table rows per run")
    args = parser.parse_args(argv)
    curves = {run: read_metrics(run) for run in args.runs}
    for run, records in curves.items():
        print(format_curves(run, records, args.rows))
    if args.plot:
        print(f"plot: {plot_curves(curves, args.plot)}")
    return curves


if __name__ == "__main__":
    main()
