"""FLOPs of one `predict_action` forward, per component, unpruned and at given numbers of kept visual tokens.

    python scripts/count_flops.py --preset openvla-7b-oft --kept_tokens '[78]'
    python scripts/count_flops.py --preset openvla-7b-oft --kept_tokens '[78]' --pruner fastv   # FastV, K = 2

The model is built on the `meta` device (no weights, no memory: the 7B configuration counts in seconds) and every
component runs once under torch's flop counter (`prismatic/policy/efficiency.py` says what is counted). LightVLA and
the pre-LLM baselines (random_k, text_topk) remove visual tokens before the LLM, so only the LLM's sequence length
changes, and their scoring is listed separately; FastV runs its first K layers on every token and prunes inside the
LLM, so its LLM row includes the full-length layers and the recomputed attention weights it ranks by.
"""

from dataclasses import dataclass, field
from typing import List

import draccus

from prismatic.policy.efficiency import FlopsSetup, component_flops


@dataclass
class FlopsConfig(FlopsSetup):
    kept_tokens: List[int] = field(default_factory=lambda: [78])


@draccus.wrap()
def main(cfg: FlopsConfig) -> dict:
    runs = {"unpruned": component_flops(cfg, None)} | {f"kept {k}": component_flops(cfg, k) for k in cfg.kept_tokens}
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
