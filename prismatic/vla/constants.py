"""Token ids and action-space settings shared by the model, the data pipeline and evaluation.

Upstream picks the platform (LIBERO / ALOHA / BRIDGE) at import time by grepping ``sys.argv``; here the action space is
an explicit, typed value stored in the model config (``OpenVLAConfig.action_space``; LIBERO: 8 actions of 7 dims).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

IGNORE_INDEX = -100  # label value that the loss and the action masks skip
STOP_INDEX = 2  # Llama-2 `</s>`; appended after the action slots at train and inference time
LLAMA2_EMPTY_TOKEN_ID = 29871  # Llama-2 SentencePiece "▁", the token between "Out:" and the first action token


# OpenVLA's prompt; training appends " " + the action tokens + STOP, inference the empty token + action slots.
PROMPT_TEMPLATE = "In: What action should the robot take to {}?\nOut:"


class NormalizationType(str, Enum):
    NORMAL = "normal"  # (x - mean) / std
    BOUNDS = "bounds"  # [min, max] -> [-1, 1]
    BOUNDS_Q99 = "bounds_q99"  # [q01, q99] -> [-1, 1]


@dataclass(frozen=True)
class ActionSpace:
    """Shape of what the policy predicts and observes."""

    num_actions_chunk: int = 8  # actions predicted per forward pass
    action_dim: int = 7  # [dx, dy, dz, droll, dpitch, dyaw, gripper]
    proprio_dim: int = 8  # eef position (3) + axis-angle (3) + gripper qpos (2)
    normalization_type: NormalizationType = NormalizationType.BOUNDS_Q99

    def __post_init__(self) -> None:
        for name in ("num_actions_chunk", "action_dim", "proprio_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ActionSpace.{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "normalization_type", NormalizationType(self.normalization_type))

    @property
    def num_action_tokens(self) -> int:
        return self.num_actions_chunk * self.action_dim

    def to_dict(self) -> dict:
        d = asdict(self)
        d["normalization_type"] = self.normalization_type.value
        return d

