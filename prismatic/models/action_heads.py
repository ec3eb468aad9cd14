"""Continuous action heads (module and state-dict key names as in OpenVLA-OFT's checkpoints)."""

from __future__ import annotations

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x)))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList([MLPResNetBlock(hidden_dim) for _ in range(num_blocks)])
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Maps the LLM's hidden states at the action slots to a chunk of continuous actions.

    The ``action_dim`` consecutive slot states of one timestep are concatenated, so the MLP sees (chunk, dim * D).
    """

    def __init__(self, input_dim: int = 4096, hidden_dim: int = 4096, action_dim: int = 7, num_actions_chunk: int = 8):
        super().__init__()
        self.action_dim = action_dim
        self.num_actions_chunk = num_actions_chunk
        self.model = MLPResNet(
            num_blocks=2, input_dim=input_dim * action_dim, hidden_dim=hidden_dim, output_dim=action_dim
        )

    def predict_action(self, actions_hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, chunk * action_dim, D) -> (B, chunk, action_dim)."""
        batch, num_slots, _ = actions_hidden_states.shape
        if num_slots != self.num_actions_chunk * self.action_dim:
            raise ValueError(
                f"action head expects {self.num_actions_chunk} x {self.action_dim} = "
                f"{self.num_actions_chunk * self.action_dim} action slots, got {num_slots}"
            )
        return self.model(actions_hidden_states.reshape(batch, self.num_actions_chunk, -1))

    forward = predict_action
