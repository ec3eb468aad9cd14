"""Projectors that turn non-visual inputs into LLM tokens (key names as in OpenVLA-OFT's checkpoints)."""

from __future__ import annotations

import torch
from torch import nn


class ProprioProjector(nn.Module):
    """Projects the robot state into one LLM token: (B, proprio_dim) -> (B, llm_dim)."""

    def __init__(self, llm_dim: int, proprio_dim: int) -> None:
        super().__init__()
        self.proprio_dim = proprio_dim
        self.fc1 = nn.Linear(proprio_dim, llm_dim, bias=True)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim, bias=True)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))
