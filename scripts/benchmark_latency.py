"""`predict_action` latency with LightVLA's pruner, without pruning, and with the training-free baselines, side by
side in one process: kept visual tokens, exact FLOPs, latency (median and p10-p90 spread), the pruner's own time, and a
batch-size sweep.

    python scripts/benchmark_latency.py                                  # tiny and small presets, CPU fp32
    python scripts/benchmark_latency.py --presets '[small]' --repeats 50 --output_json runs/latency.json --plot runs/latency.png

Weights are random (presets built from scratch), so the kept-token count is that of an untrained pruner on the
benchmark's observations; the baselines get the same budget (`--budget`, default: what LightVLA keeps) so every row
runs the LLM on the same number of visual tokens. Timed is `vla.predict_action` on preprocessed inputs (vision
backbone, projector, pruner, LLM, action head); image preprocessing (upstream's pipeline for two 256x256 camera
frames: JPEG round trip, lanczos3 to the model's size, center crop, processor, prompt and proprio) is timed on its
own and reported beside it. On a GPU: bf16 and CUDA events; on the CPU: fp32 and perf_counter. FLOPs are counted on
the same call with `torch.utils.flop_counter` (matrix products only).
"""

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import draccus
import numpy as np
import torch

from prismatic.models.pruning_baselines import make_pruner, set_visual_token_pruner
from prismatic.plotting import pyplot, save_figure
from prismatic.policy.efficiency import Clock, measure_predict
from prismatic.policy.inference import policy_inputs
from prismatic.policy.presets import make_policy
from prismatic.precision import prepare_for_inference, resolve_precision

UNNORM_KEY = "benchmark"
TASKS = [
    "pick up the alphabet soup and place it in the basket",
    "put the black bowl on the plate",
    "open the top drawer of the cabinet",
    "turn on the stove and put the moka pot on it",
]


@dataclass
class LatencyConfig:
    # fmt: off
    presets: List[str] = field(default_factory=lambda: ["tiny", "small"])
    pruners: List[str] = field(default_factory=lambda: ["none", "lightvla", "random_k", "text_topk", "fastv"])
    budget: Optional[int] = None            # baselines' kept patches; None: LightVLA's count at batch size 1
    fastv_layer: int = 2                    # FastV's K: decoder layers run on every token
    batch_sizes: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    sweep_pruners: List[str] = field(default_factory=lambda: ["none", "lightvla"])
    warmup: int = 3
    repeats: int = 20
    device: str = "auto"                    # auto: cuda when available, else cpu
    seed: int = 0
    output_json: Optional[str] = None
    plot: Optional[str] = None              # PNG: FLOPs and latency relative to unpruned, per pruner and preset
    # fmt: on


def benchmark_statistics() -> dict:
    """Statistics in the dataset_statistics.json format, at LIBERO's scale (the actions are not looked at)."""
    return {
        UNNORM_KEY: {
            "action": {"q01": [-0.9] * 6 + [-1.0], "q99": [0.9] * 6 + [1.0], "mask": [True] * 6 + [False]},
            "proprio": {
                "q01": [-0.3, -0.3, 0.8, -3.2, -3.2, -3.2, 0.0, -0.04],
                "q99": [0.3, 0.3, 1.3, 3.2, 3.2, 3.2, 0.04, 0.0],
            },
        }
    }


def observations(batch: int, seed: int) -> tuple[list[dict], list[str]]:
    rng = np.random.default_rng(seed)
    obs = [
        {
            "full_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "state": rng.uniform(-0.2, 0.2, 8),
        }
        for _ in range(batch)
    ]
    return obs, [TASKS[i % len(TASKS)] for i in range(batch)]


def time_pruner_calls(pruner: torch.nn.Module, clock: Clock) -> list[float]:
    """Milliseconds of every later call of ``pruner`` (forward hooks around the module call)."""
    times: list[float] = []
    starts: list = []
    pruner.register_forward_pre_hook(lambda module, args: starts.append(clock.start()))
    pruner.register_forward_hook(lambda module, args, out: times.append(clock.stop(starts.pop())))
    return times


def measure(policy, pruner, inputs: dict, cfg: LatencyConfig, clock: Clock) -> dict:
    """One (pruner, batch) cell: kept tokens, FLOPs, latency distribution, pruner time."""
    vla = policy.vla
    set_visual_token_pruner(vla, pruner)
    pruner_times = time_pruner_calls(pruner, clock)
    cost = measure_predict(vla, [inputs], cfg.repeats, cfg.warmup, clock)
    pruner_times = pruner_times[(1 + cfg.warmup) :]  # the timed calls only
    stats = vla.pruner.last_stats if getattr(pruner, "enabled", True) else None
    return {
        "kept_tokens": float(stats.kept_counts.float().mean()) if stats is not None else float(vla.get_num_patches()),
        **cost,
        "pruner_ms": statistics.median(pruner_times) if pruner_times else 0.0,
    }


def time_preprocessing(policy, cfg: LatencyConfig) -> float:
    """Median milliseconds to turn one observation (two 256x256 frames, state, instruction) into model inputs."""
    obs, tasks = observations(1, cfg.seed)
    times = []
    for i in range(cfg.warmup + cfg.repeats):
        start = time.perf_counter()
        policy_inputs(policy, obs, tasks, UNNORM_KEY)
        if i >= cfg.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def benchmark_preset(preset: str, cfg: LatencyConfig, device: torch.device) -> dict:
    policy = make_policy(preset, norm_stats=benchmark_statistics(), seed=cfg.seed)
    prepare_for_inference(policy.vla, resolve_precision("auto", device))  # as load_policy: bf16 on GPUs
    for module in (policy.vla, policy.action_head, policy.proprio_projector):
        if module is not None:
            module.to(device=device)
    clock = Clock(device)
    inputs = {b: policy_inputs(policy, *observations(b, cfg.seed), UNNORM_KEY) for b in set(cfg.batch_sizes) | {1}}
    preprocess_ms = time_preprocessing(policy, cfg)

    budget = cfg.budget
    if budget is None:
        set_visual_token_pruner(policy.vla, make_pruner("lightvla"))
        policy.vla.predict_action(**inputs[1])
        budget = int(policy.vla.pruner.last_stats.kept_counts[0])
    make = lambda name: make_pruner(name, budget, cfg.fastv_layer, cfg.seed)  # noqa: E731
    rows = {name: measure(policy, make(name), inputs[1], cfg, clock) for name in cfg.pruners}
    sweep = {
        name: {b: measure(policy, make(name), inputs[b], cfg, clock) for b in cfg.batch_sizes}
        for name in cfg.sweep_pruners
    }
    image_size = policy.vla.vision_backbone.image_size
    return {
        "preset": preset,
        "budget": budget,
        "image_size": image_size,
        "preprocess_ms": preprocess_ms,
        "pruners": rows,
        "batch_sweep": sweep,
    }


def print_preset(result: dict, cfg: LatencyConfig, device: torch.device) -> None:
    rows = result["pruners"]
    base = rows.get("none")
    precision = "bf16 (fp32 vision)" if device.type == "cuda" else f"fp32, {torch.get_num_threads()} threads"
    print(
        f"\n{result['preset']}: batch 1, {device.type} {precision}, {cfg.repeats} repeats after {cfg.warmup} warm-up; "
        f"baseline budget {result['budget']} patches"
    )
    print(
        f"{'pruner':<11}{'kept':>7}{'GFLOPs':>9}{'FLOPs x':>9}{'median ms':>11}{'p10-p90 ms':>15}{'latency x':>11}"
        f"{'pruner ms':>11}"
    )
    for name, r in rows.items():
        flops_ratio = f"{r['gflops'] / base['gflops']:.3f}" if base else "-"
        latency_ratio = f"{r['median_ms'] / base['median_ms']:.3f}" if base else "-"
        spread = f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}"
        print(
            f"{name:<11}{r['kept_tokens']:>7.1f}{r['gflops']:>9.2f}{flops_ratio:>9}{r['median_ms']:>11.1f}"
            f"{spread:>15}{latency_ratio:>11}{r['pruner_ms']:>11.2f}"
        )
    print(
        f"image preprocessing (2 frames 256 px -> {result['image_size']} px, upstream's pipeline, CPU): "
        f"{result['preprocess_ms']:.1f} ms per query, beside the model's {rows[next(iter(rows))]['median_ms']:.1f} ms"
    )
    sweep = result["batch_sweep"]
    if not sweep:
        return
    print("batch sweep (median ms per call / per sample):")
    print(f"{'batch':>7}" + "".join(f"{name + ' call':>16}{name + ' sample':>16}" for name in sweep))
    for b in cfg.batch_sizes:
        cells = "".join(f"{sweep[n][b]['median_ms']:>16.1f}{sweep[n][b]['median_ms'] / b:>16.1f}" for n in sweep)
        print(f"{b:>7}{cells}")


def plot_ratios(results: list[dict], path: str) -> None:
    """Grouped bars: FLOPs and median latency of every pruner relative to the unpruned model, one panel per preset."""
    fig, axes = pyplot().subplots(1, len(results), figsize=(4.2 * len(results), 3.2), squeeze=False)
    for ax, result in zip(axes[0], results):
        rows, base = result["pruners"], result["pruners"]["none"]
        names = list(rows)
        x = np.arange(len(names))
        ax.bar(x - 0.2, [rows[n]["gflops"] / base["gflops"] for n in names], 0.4, label="FLOPs")
        ax.bar(x + 0.2, [rows[n]["median_ms"] / base["median_ms"] for n in names], 0.4, label="latency")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(f"{result['preset']} (budget {result['budget']} of 512)")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_ylabel("relative to unpruned")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


@draccus.wrap()
def main(cfg: LatencyConfig) -> list[dict]:
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))  # fmt: skip
    results = []
    for preset in cfg.presets:
        results.append(benchmark_preset(preset, cfg, device))
        print_preset(results[-1], cfg, device)
    if cfg.output_json:
        path = Path(cfg.output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": asdict(cfg), "device": str(device), "results": results}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(path)
    if cfg.plot and all("none" in r["pruners"] for r in results):
        plot_ratios(results, cfg.plot)
        print(f"\nplot: {cfg.plot}")
    return results


if __name__ == "__main__":
    main()
