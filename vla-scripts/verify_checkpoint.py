"""Load a checkpoint folder (or Hub id) and predict one action chunk: a quick check that a download is usable.

    python vla-scripts/verify_checkpoint.py --pretrained_checkpoint PATH --num_images_in_input 2 \
        --unnorm_key libero_spatial [--prune_visual_tokens False] [--action_readout lightvla_tail]

Uses a synthetic observation (random images, zero state) unless --observation points to an .npz with
full_image / wrist_image / state arrays.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import draccus
import numpy as np

from prismatic.models.checkpoints import load_policy
from prismatic.vla.inference import predict_action_chunk


@dataclass
class VerifyConfig:
    pretrained_checkpoint: str = ""  # folder with config.json, or a Hub id
    num_images_in_input: int = 2
    use_proprio: bool = True
    unnorm_key: str = ""  # dataset statistics to un-normalise with; may be left empty if there is only one
    task_description: str = "put the black bowl on the plate"
    observation: Path | None = None  # .npz with full_image, wrist_image, state
    prune_visual_tokens: bool = True
    action_readout: str = "oft_aligned"  # or "lightvla_tail" (upstream LightVLA's eval read-out)
    device: str = "cpu"
    precision: str = "auto"  # bf16 | fp32 | auto (bf16 on a GPU, fp32 on the CPU)

    def __post_init__(self) -> None:
        if not self.pretrained_checkpoint:
            raise ValueError("--pretrained_checkpoint is required (a checkpoint folder or a Hub id)")


def synthetic_observation(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = lambda: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return {"full_image": image(), "wrist_image": image(), "state": np.zeros(8)}


@draccus.wrap()
def verify(cfg: VerifyConfig) -> None:
    start = time.perf_counter()
    policy = load_policy(
        cfg.pretrained_checkpoint,
        device=cfg.device,
        precision=cfg.precision,
        num_images_in_input=cfg.num_images_in_input,
        use_proprio=cfg.use_proprio,
        prune_visual_tokens=cfg.prune_visual_tokens,
        action_readout=cfg.action_readout,
    )
    print(f"loaded {policy.folder} in {time.perf_counter() - start:.1f} s")
    obs = dict(np.load(cfg.observation)) if cfg.observation else synthetic_observation()
    start = time.perf_counter()
    actions, pruning = predict_action_chunk(policy, [obs], [cfg.task_description], cfg.unnorm_key or None)
    elapsed = time.perf_counter() - start
    np.set_printoptions(precision=4, suppress=True)
    print(f"action chunk {actions[0].shape}:\n{actions[0]}")
    kept = f"{int(pruning.kept_counts[0])} of {pruning.num_patches}" if pruning else "all (pruning off)"
    print(f"visual tokens kept: {kept}; predict time {elapsed * 1e3:.0f} ms")


if __name__ == "__main__":
    verify()
