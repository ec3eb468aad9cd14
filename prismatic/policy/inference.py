"""From robot observations to action chunks: the inference path shared by the demo, evaluation and the server.

An observation is a dict with ``full_image`` (uint8 H x W x 3, third-person), optional wrist image(s) under keys
containing "wrist", and ``state`` (raw proprio). Images are used in the order [full_image, wrist keys sorted].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from prismatic.extern.hf.processing_prismatic import to_pil_rgb
from prismatic.models.pruning import PruningStats
from prismatic.models.pruning_baselines import make_pruner, set_visual_token_pruner
from prismatic.policy.checkpoints import Policy, load_policy
from prismatic.vla.image_pipeline import prepare_image
from prismatic.vla.normalization import normalize, resolve_unnorm_key
from prismatic.vla.prompts import build_prompt


def observation_images(observation: Mapping, num_images: int) -> list[np.ndarray]:
    if "full_image" not in observation:
        raise ValueError(f"observation needs a 'full_image' (uint8 H x W x 3); got keys {sorted(observation)}")
    images = [observation["full_image"]] + [observation[k] for k in sorted(observation) if "wrist" in k]
    if len(images) < num_images:
        raise ValueError(
            f"the policy takes {num_images} image(s) but the observation has {len(images)} "
            f"(full_image + keys containing 'wrist': {sorted(k for k in observation if 'wrist' in k)})"
        )
    return [np.asarray(to_pil_rgb(im)) for im in images[:num_images]]  # checked: uint8 (H, W, 3)


def load_inference_policy(
    checkpoint: str,
    num_images_in_input: int | None = None,
    use_proprio: bool = True,
    prune_visual_tokens: bool | None = None,
    action_readout: str | None = None,
    visual_token_pruner: str | None = None,
    visual_token_budget: int | None = None,
    fastv_layer: int = 2,
    seed: int = 0,
    pruner_eval_duplicates: str | None = None,
    precision: str | None = None,
    device: str | None = None,
) -> Policy:
    """A checkpoint (folder or Hub id) ready for inference on ``device`` (None: the GPU when there is one, else the
    CPU); ``precision`` bf16 | fp32 | auto (None: bf16 on the GPU, fp32 on the CPU; see ``prismatic.precision``).

    ``None`` keeps what the checkpoint says (and, for a released checkpoint, what its name says: ``pruning_settings``).
    ``visual_token_pruner`` swaps in a training-free baseline (or ``lightvla`` / ``none``) from
    ``prismatic.models.pruning_baselines``.
    """
    overrides = {}
    if action_readout is not None:
        overrides["action_readout"] = action_readout
    if prune_visual_tokens is not None:
        overrides["prune_visual_tokens"] = prune_visual_tokens
    if pruner_eval_duplicates is not None:
        overrides["pruner_eval_duplicates"] = pruner_eval_duplicates
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    policy = load_policy(
        checkpoint, device, precision, num_images_in_input=num_images_in_input, use_proprio=use_proprio, **overrides
    )
    if visual_token_pruner is not None:
        pruner = make_pruner(visual_token_pruner, visual_token_budget, fastv_layer, seed)
        set_visual_token_pruner(policy.vla, pruner)
    return policy


def policy_inputs(
    policy: Policy,
    observations: Sequence[Mapping],
    task_descriptions: Sequence[str],
    unnorm_key: str | None = None,
    use_center_crop: bool = True,
) -> dict:
    """Observations -> the keyword arguments of ``vla.predict_action`` (processed images, prompt ids, proprio)."""
    if len(observations) != len(task_descriptions):
        raise ValueError(f"{len(observations)} observations but {len(task_descriptions)} task descriptions")
    vla = policy.vla
    key = resolve_unnorm_key(vla.norm_stats, unnorm_key)
    num_images = vla.get_num_images_in_input()
    size = vla.vision_backbone.image_size
    images = [[prepare_image(im, size, use_center_crop) for im in observation_images(obs, num_images)]
              for obs in observations]  # fmt: skip
    inputs = policy.processor([build_prompt(t) for t in task_descriptions], images)
    device = vla.device
    inputs = {k: v.to(device) for k, v in inputs.items()}  # pixel values stay fp32: the vision backbone's dtype

    proprio = None
    if policy.proprio_projector is not None:
        stats = vla.norm_stats[key].get("proprio")
        if stats is None:
            raise ValueError(f"statistics for {key!r} have no 'proprio' entry; the policy uses proprio")
        if any("state" not in obs for obs in observations):
            raise ValueError("the policy uses proprio: every observation needs 'state' (the raw robot state)")
        states = [np.asarray(obs["state"], dtype=np.float64) for obs in observations]
        proprio = torch.as_tensor(np.stack([normalize(s, stats, vla.action_space.normalization_type) for s in states]))
    return dict(
        **inputs,
        unnorm_key=key,
        proprio=proprio,
        proprio_projector=policy.proprio_projector,
        action_head=policy.action_head,
    )


def predict_action_chunk(
    policy: Policy,
    observations: Sequence[Mapping],
    task_descriptions: Sequence[str],
    unnorm_key: str | None = None,
    use_center_crop: bool = True,
) -> tuple[np.ndarray, PruningStats | None]:
    """Batched inference: (B, chunk, action_dim) un-normalised actions and the pruner's statistics."""
    vla = policy.vla
    actions, _ = vla.predict_action(
        **policy_inputs(policy, observations, task_descriptions, unnorm_key, use_center_crop)
    )
    actions = actions.reshape(len(observations), vla.action_space.num_actions_chunk, -1)
    return actions, vla.pruner.last_stats if vla.pruner.enabled else None
