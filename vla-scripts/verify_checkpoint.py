"""Load a checkpoint folder (or Hub id) and predict one action chunk: a quick check that a download is usable.

    python vla-scripts/verify_checkpoint.py --pretrained_checkpoint PATH --num_images_in_input 2 \
        --unnorm_key libero_spatial [--prune_visual_tokens False] [--action_readout lightvla_tail]

A released checkpoint runs as its name says (LightVLA: pruning and the lightvla_tail read-out; OpenVLA-OFT: no
pruning), as in evaluation and deployment; the flags override it.

Uses a synthetic observation (random images, zero state) unless --observation points to an .npz with
full_image / wrist_image / state arrays.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import draccus
import numpy as np

from prismatic.policy.options import PolicyOptions


@dataclass
class VerifyConfig(PolicyOptions):
    """The policy's flags (``PolicyOptions``: a released checkpoint runs as its name says unless flags say otherwise)
    and the observation to predict from."""

    task_description: str = "put the black bowl on the plate"
    observation: Optional[Path] = None  # .npz with full_image, wrist_image, state
    device: Optional[str] = None  # None: the GPU when there is one, else the CPU

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_checkpoint()


def synthetic_observation(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = lambda: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)  # noqa: E731
    return {"full_image": image(), "wrist_image": image(), "state": np.zeros(8)}


@draccus.wrap()
def verify(cfg: VerifyConfig) -> np.ndarray:
    from prismatic.policy.inference import predict_action_chunk

    start = time.perf_counter()
    policy = cfg.load_policy(cfg.device)
    print(f"loaded {policy.folder} in {time.perf_counter() - start:.1f} s")
    obs = dict(np.load(cfg.observation)) if cfg.observation else synthetic_observation()
    start = time.perf_counter()
    actions, pruning = predict_action_chunk(
        policy, [obs], [cfg.task_description], cfg.unnorm_key or None, cfg.center_crop
    )
    elapsed = time.perf_counter() - start
    np.set_printoptions(precision=4, suppress=True)
    print(f"action chunk {actions[0].shape}:\n{actions[0]}")
    kept = f"{int(pruning.kept_counts[0])} of {pruning.num_patches}" if pruning else "all (pruning off)"
    print(f"visual tokens kept: {kept}; predict time {elapsed * 1e3:.0f} ms")
    return actions[0]


if __name__ == "__main__":
    verify()
