"""What a policy's forward pass costs, written once for the study (``experiments/robot/libero/study.py``),
``scripts/benchmark_latency.py`` and ``scripts/count_flops.py``.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``: matrix products (linear layers, convolutions,
attention) at 2 FLOPs per multiply-add; element-wise work (norms, activations, RoPE) is not counted, as in the usual
FLOP figures. Latency is measured in this process: CUDA events on a GPU (kernels are asynchronous), perf_counter on
the CPU.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.models.llama_bidirectional import bidirectional_llama_forward
from prismatic.models.pruning import PrunedSequence, TokenPruner
from prismatic.models.pruning_baselines import DEFAULT_FASTV_LAYER, TextTopKPruner
from prismatic.policy.presets import get_preset, make_config, make_heads


def count_flops(fn: Callable, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """(FLOPs of one call of ``fn``, its result)."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return counter.get_total_flops(), out


class Clock:
    """Elapsed milliseconds: CUDA events on a GPU (asynchronous kernels), perf_counter on the CPU."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"

    def start(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, start) -> float:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def measure_predict(
    vla: OpenVLAForActionPrediction, samples: list[dict], repeats: int, warmup: int = 0, clock: Clock | None = None
) -> dict[str, float]:
    """FLOPs and latency of ``vla.predict_action`` on preprocessed ``samples`` (``inference.policy_inputs``): GFLOPs
    counted on each sample's first call (mean over samples), then ``warmup`` untimed and ``repeats`` timed passes
    over the samples; latency median and p10 / p90 over every timed call."""
    clock = clock or Clock(vla.device)
    gflops = statistics.mean(count_flops(vla.predict_action, **sample)[0] for sample in samples) / 1e9
    for _ in range(warmup):
        for sample in samples:
            vla.predict_action(**sample)
    latencies = []
    for _ in range(repeats):
        for sample in samples:
            start = clock.start()
            vla.predict_action(**sample)
            latencies.append(clock.stop(start))
    deciles = statistics.quantiles(latencies, n=10) if len(latencies) > 1 else latencies * 9
    return {"gflops": gflops, "median_ms": statistics.median(latencies), "p10_ms": deciles[0], "p90_ms": deciles[-1]}


# --- FLOPs per component, on the meta device (no weights: the 7B configuration counts in seconds) ---------------
# The pre-LLM pruners' scoring as a function of (patches, task tokens); random_k and FastV (inside the LLM) have none.
PRUNER_SCORING = {
    "lightvla": lambda patches, task: TokenPruner.score(patches, task, None),
    "text_topk": lambda patches, task: TextTopKPruner(1).patch_scores(
        patches, task, torch.ones(task.shape[:2], device=task.device)
    ),
    "random_k": None,
    "fastv": None,
}


@dataclass
class FlopsSetup:
    """What one observation looks like to the model whose components are counted."""

    preset: str = "openvla-7b-oft"
    num_images_in_input: int = 2
    use_proprio: bool = True
    prompt_tokens: int = 30  # BOS + "In: What action should the robot take to <LIBERO task>?\nOut:" + "▁"
    pruner: str = "lightvla"  # lightvla | random_k | text_topk | fastv: how the kept tokens are chosen
    fastv_layer: int = DEFAULT_FASTV_LAYER

    def __post_init__(self):
        if self.pruner not in PRUNER_SCORING:
            raise ValueError(f"--pruner must be one of {sorted(PRUNER_SCORING)}, got {self.pruner!r}")


def component_flops(setup: FlopsSetup, kept: int | None) -> dict[str, int]:
    """FLOPs per component of one ``predict_action``; ``kept=None`` is the unpruned model. LightVLA and the pre-LLM
    baselines only shorten the LLM's sequence (their scoring is counted apart); FastV runs its first K layers on every
    token, so its LLM count includes those layers and the attention weights it ranks by."""
    config = make_config(setup.preset, num_images_in_input=setup.num_images_in_input)
    with torch.device("meta"):
        vla = OpenVLAForActionPrediction(config)
        head, proprio = make_heads(config, get_preset(setup.preset).head_hidden_dim, use_proprio=setup.use_proprio)
    dim, space = config.text_config.hidden_size, config.get_action_space()
    channels = vla.vision_backbone.channels_per_image * setup.num_images_in_input
    pixels = torch.empty(1, channels, config.image_sizes[0], config.image_sizes[0], device="meta")
    result = {}
    result["vision_backbone"], features = count_flops(vla.vision_backbone, pixels)
    result["projector"], patches = count_flops(vla.projector, features)
    num_patches = patches.shape[1]
    n_text = setup.prompt_tokens - 1 + space.num_action_tokens + 1  # prompt after BOS, action slots, STOP
    task = torch.empty(1, n_text, dim, device="meta")
    if kept is not None and PRUNER_SCORING[setup.pruner] is not None:
        result["pruner_scoring"], _ = count_flops(PRUNER_SCORING[setup.pruner], patches, task)
    if proprio is not None:
        result["proprio_projector"], _ = count_flops(proprio, torch.empty(1, space.proprio_dim, device="meta"))
    full = 1 + num_patches + (proprio is not None) + n_text
    visual = num_patches if kept is None else min(kept, num_patches)
    fastv = kept is not None and setup.pruner == "fastv"
    length = full if fastv else full - num_patches + visual
    tokens = torch.empty(1, length, dim, device="meta")
    positions = torch.arange(length, device="meta")[None]
    prune_after = (setup.fastv_layer, keep_first_patches(num_patches, visual)) if fastv else None
    result["llm"], _ = count_flops(
        bidirectional_llama_forward, vla.language_model.model, tokens, positions, None, False, prune_after
    )
    hidden = torch.empty(1, space.num_action_tokens, dim, device="meta")
    result["action_head"], _ = count_flops(head.predict_action, hidden)
    result["total"] = sum(result.values())
    result["llm_sequence_length"] = full - num_patches + visual
    return result


def keep_first_patches(num_patches: int, kept: int):
    """A FastV ``select`` for the meta device: computes FastV's attention weights (their cost counts) but, with no
    values to rank, keeps the first ``kept`` patches; which ones are kept does not change the count."""

    def select(hidden, position_ids, mask, attention):
        attention(query_start=1 + num_patches)
        cut = lambda x: torch.cat([x[:, : 1 + kept], x[:, 1 + num_patches :]], 1)  # noqa: E731
        return PrunedSequence(cut(hidden), cut(position_ids), cut(mask), kept, num_patches)

    return select
