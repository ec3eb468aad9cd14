"""FLOPs of one `predict_action` forward, per component, unpruned and at given numbers of kept visual tokens.

    python scripts/count_flops.py --preset openvla-7b-oft --kept_tokens '[78]'
    python scripts/count_flops.py --preset openvla-7b-oft --kept_tokens '[78]' --pruner fastv   # FastV, K = 2

The model is built on the `meta` device (no weights, no memory: the 7B configuration counts in seconds) and every
component runs once under `torch.utils.flop_counter.FlopCounterMode`, which counts the matrix products
(linear layers, convolutions, attention) at 2 FLOPs per multiply-add; element-wise work (norms, activations,
RoPE) is not counted, as in the usual FLOP figures. LightVLA and the pre-LLM baselines (random_k, text_topk) remove
visual tokens before the LLM, so only the LLM's sequence length changes, and their scoring is listed separately;
FastV runs its first K layers on every token and prunes inside the LLM, so its LLM row includes the full-length
layers and the recomputed attention weights it ranks by.
"""

from dataclasses import dataclass, field
from typing import List

import draccus
import torch
from torch.utils.flop_counter import FlopCounterMode

from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.models.llama_bidirectional import bidirectional_llama_forward
from prismatic.models.pruning import PrunedSequence, TokenPruner
from prismatic.models.pruning_baselines import DEFAULT_FASTV_LAYER, TextTopKPruner
from prismatic.policy.presets import get_preset, make_config, make_heads


@dataclass
class FlopsConfig:
    preset: str = "openvla-7b-oft"
    num_images_in_input: int = 2
    use_proprio: bool = True
    prompt_tokens: int = 30  # BOS + "In: What action should the robot take to <LIBERO task>?\nOut:" + "▁"
    kept_tokens: List[int] = field(default_factory=lambda: [78])
    pruner: str = "lightvla"  # lightvla | random_k | text_topk | fastv: how the kept tokens are chosen
    fastv_layer: int = DEFAULT_FASTV_LAYER

    def __post_init__(self):
        if self.pruner not in PRUNER_SCORING:
            raise ValueError(f"--pruner must be one of {sorted(PRUNER_SCORING)}, got {self.pruner!r}")


# The pre-LLM pruners' scoring, as a function of (patches, task tokens); random_k does no arithmetic on tokens.
PRUNER_SCORING = {
    "lightvla": lambda patches, task: TokenPruner.score(patches, task, None),
    "text_topk": lambda patches, task: TextTopKPruner(1).patch_scores(
        patches, task, torch.ones(task.shape[:2], device=task.device)
    ),
    "random_k": None,
    "fastv": None,
}


def flops(fn, *args) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return counter.get_total_flops(), out


def count(cfg: FlopsConfig, kept: int | None) -> dict[str, int]:
    """FLOPs per component for one observation; `kept=None` is the unpruned model."""
    config = make_config(cfg.preset, num_images_in_input=cfg.num_images_in_input)
    with torch.device("meta"):
        vla = OpenVLAForActionPrediction(config)
        head, proprio = make_heads(config, get_preset(cfg.preset).head_hidden_dim, use_proprio=cfg.use_proprio)
    dim, space = config.text_config.hidden_size, config.get_action_space()
    channels = vla.vision_backbone.channels_per_image * cfg.num_images_in_input
    pixels = torch.empty(1, channels, config.image_sizes[0], config.image_sizes[0], device="meta")
    result = {}
    result["vision_backbone"], features = flops(vla.vision_backbone, pixels)
    result["projector"], patches = flops(vla.projector, features)
    num_patches = patches.shape[1]
    n_text = cfg.prompt_tokens - 1 + space.num_action_tokens + 1  # prompt after BOS, action slots, STOP
    task = torch.empty(1, n_text, dim, device="meta")
    if kept is not None and PRUNER_SCORING[cfg.pruner] is not None:
        result["pruner_scoring"], _ = flops(PRUNER_SCORING[cfg.pruner], patches, task)
    if proprio is not None:
        result["proprio_projector"], _ = flops(proprio, torch.empty(1, space.proprio_dim, device="meta"))
    full = 1 + num_patches + (proprio is not None) + n_text
    visual = num_patches if kept is None else min(kept, num_patches)
    fastv = kept is not None and cfg.pruner == "fastv"
    length = full if fastv else full - num_patches + visual
    tokens = torch.empty(1, length, dim, device="meta")
    positions = torch.arange(length, device="meta")[None]
    prune_after = (cfg.fastv_layer, keep_first_patches(num_patches, visual)) if fastv else None
    result["llm"], _ = flops(
        bidirectional_llama_forward, vla.language_model.model, tokens, positions, None, False, prune_after
    )
    length = full - num_patches + visual
    hidden = torch.empty(1, space.num_action_tokens, dim, device="meta")
    result["action_head"], _ = flops(head.predict_action, hidden)
    result["total"] = sum(result.values())
    result["llm_sequence_length"] = length
    return result


def keep_first_patches(num_patches: int, kept: int):
    """A FastV ``select`` for the meta device: computes FastV's attention weights (their cost counts) but, with no
    values to rank, keeps the first ``kept`` patches; which ones are kept does not change the count."""

    def select(hidden, position_ids, mask, attention):
        attention(query_start=1 + num_patches)
        cut = lambda x: torch.cat([x[:, : 1 + kept], x[:, 1 + num_patches :]], 1)  # noqa: E731
        return PrunedSequence(cut(hidden), cut(position_ids), cut(mask), kept, num_patches)

    return select


@draccus.wrap()
def main(cfg: FlopsConfig) -> dict:
    runs = {"unpruned": count(cfg, None)} | {f"kept {k}": count(cfg, k) for k in cfg.kept_tokens}
    names = [n for n in runs["unpruned"] if n not in ("total", "llm_sequence_length")] + ["pruner_scoring", "total"]
    names = list(dict.fromkeys(names))
    print(
        f"{cfg.preset}: {cfg.num_images_in_input} image(s), proprio {cfg.use_proprio}, prompt {cfg.prompt_tokens} "
        f"tokens, pruner {cfg.pruner}; GFLOPs per predict_action"
    )
    print(f"{'component':<20}" + "".join(f"{name:>16}" for name in runs))
    for name in names:
        cells = [runs[r].get(name) for r in runs]
        print(f"{name:<20}" + "".join(f"{c / 1e9:>16,.1f}" if c is not None else f"{'-':>16}" for c in cells))
    print(f"{'LLM sequence':<20}" + "".join(f"{runs[r]['llm_sequence_length']:>16}" for r in runs))
    base = runs["unpruned"]["total"]
    print(f"{'total vs unpruned':<20}" + "".join(f"{runs[r]['total'] / base:>16.3f}" for r in runs))
    return runs


if __name__ == "__main__":
    main()
