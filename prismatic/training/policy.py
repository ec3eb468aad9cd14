"""The trainable policy: VLA (with LoRA) + action head + proprio projector in one module, and its L1 loss.

One module so that DistributedDataParallel wraps everything that trains in a single bucketed all-reduce. Every
forward (the training step and the kept-token measurement alike) runs the VLA under the run's precision
(``prismatic.precision``) and the heads in fp32, as inference does.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prismatic.precision import Precision, fp32_island


@dataclass
class StepMetrics:
    loss: torch.Tensor  # L1 over the whole chunk (what is optimised)
    curr_action_l1_loss: float  # L1 on the first action of the chunk
    next_actions_l1_loss: float  # L1 on the 7 future actions


class TrainablePolicy(nn.Module):
    def __init__(
        self, vla: nn.Module, action_head: nn.Module, proprio_projector: nn.Module | None, precision: Precision
    ):
        super().__init__()
        self.vla = vla
        self.action_head = action_head
        self.proprio_projector = proprio_projector
        self.precision = precision

    def predict_normalized(self, batch: dict) -> torch.Tensor:
        """(B, chunk, action_dim) fp32 normalised actions from a collated training batch."""
        with self.precision.autocast():
            out = self.vla(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"],
                labels=batch["labels"],
                proprio=batch.get("proprio") if self.proprio_projector is not None else None,
                proprio_projector=self.proprio_projector,
            )
        with fp32_island(self.precision.device_type):
            return self.action_head.predict_action(out.action_hidden_states.float())

    def forward(self, batch: dict) -> StepMetrics:
        target = batch["actions"]
        pred = self.predict_normalized(batch).to(target.dtype)
        return StepMetrics(
            loss=F.l1_loss(pred, target),
            curr_action_l1_loss=F.l1_loss(pred[:, 0], target[:, 0]).item(),
            next_actions_l1_loss=F.l1_loss(pred[:, 1:], target[:, 1:]).item(),
        )


def base_vla(vla: nn.Module) -> nn.Module:
    """The OpenVLA model under a peft wrapper (or the model itself)."""
    return vla.get_base_model() if hasattr(vla, "get_base_model") else vla


@torch.no_grad()
def kept_visual_tokens(policy: TrainablePolicy, batch: dict) -> float:
    """Mean visual tokens the pruner keeps on this batch in eval mode (inference behaviour), then back to training."""
    model = base_vla(policy.vla)
    if not model.pruner.enabled:
        return float(model.get_num_patches())  # every patch of every image
    was_training = policy.training
    policy.eval()
    try:
        policy.predict_normalized(batch)
        return float(model.pruner.last_stats.kept_counts.float().mean())
    finally:
        policy.train(was_training)
