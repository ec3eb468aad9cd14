"""Tiny-preset demo: build the LightVLA architecture at CPU size, predict an action chunk, compare latency with and
without token pruning.

    python scripts/demo_tiny.py [--repeats 30]

The weights are random (no checkpoint is needed), so the actions are meaningless; the point is the full inference
path (processor -> fused ViTs -> projector -> pruner -> bidirectional Llama -> L1 head -> un-normalisation) and what
pruning saves. Later steps of the quickstart train this preset on LIBERO demonstrations.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from prismatic.presets import make_policy
from prismatic.vla.inference import predict_action_chunk

TASK = "pick up the alphabet soup and place it in the basket"
UNNORM_KEY = "libero_object_no_noops"


def demo_statistics() -> dict:
    """Statistics in the dataset_statistics.json format, roughly LIBERO's scale."""
    return {
        UNNORM_KEY: {
            "action": {"q01": [-0.9] * 6 + [-1.0], "q99": [0.9] * 6 + [1.0], "mask": [True] * 6 + [False]},
            "proprio": {
                "q01": [-0.3, -0.3, 0.8, -3.2, -3.2, -3.2, 0.0, -0.04],
                "q99": [0.3, 0.3, 1.3, 3.2, 3.2, 3.2, 0.04, 0.0],
            },
        }
    }


def observation(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "full_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "state": rng.uniform(-0.2, 0.2, 8),
    }


def time_predictions(policy, obs, repeats: int) -> list[float]:
    predict_action_chunk(policy, [obs], [TASK])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_action_chunk(policy, [obs], [TASK])
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    start = time.perf_counter()
    policy = make_policy("tiny", norm_stats=demo_statistics())
    vla = policy.vla
    print(f"tiny preset built in {time.perf_counter() - start:.1f} s: "
          f"{sum(p.numel() for p in vla.parameters()) / 1e6:.2f} M parameters, "
          f"{vla.get_num_images_in_input()} images x {vla.vision_backbone.get_num_patches()} patches")  # fmt: skip

    obs = observation(0)
    actions, stats = predict_action_chunk(policy, [obs], [TASK])
    np.set_printoptions(precision=3, suppress=True)
    print(f"task: {TASK}\naction chunk {actions[0].shape} (un-normalised):\n{actions[0]}")
    print(f"visual tokens kept: {int(stats.kept_counts[0])} of {stats.num_patches}")

    rows = []
    for pruning in (True, False):
        vla.pruner.enabled = pruning
        times = time_predictions(policy, obs, args.repeats)
        quantiles = statistics.quantiles(times, n=10)
        rows.append((pruning, statistics.median(times) * 1e3, quantiles[0] * 1e3, quantiles[-1] * 1e3))
    print(f"\npredict latency over {args.repeats} runs (CPU, fp32, {torch.get_num_threads()} threads)")
    print(f"{'pruning':<10}{'median ms':>12}{'p10 ms':>10}{'p90 ms':>10}")
    for pruning, median, p10, p90 in rows:
        print(f"{'on' if pruning else 'off':<10}{median:>12.1f}{p10:>10.1f}{p90:>10.1f}")
    print(f"latency ratio pruned / unpruned: {rows[0][1] / rows[1][1]:.2f}")


if __name__ == "__main__":
    main()
