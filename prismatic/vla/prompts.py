"""The text side of a sample, shared by training data, inference and the model: the prompt and the token layout of the
action slots. Model-free: the model config is read through the three settings below, not imported."""

from typing import Protocol

import torch

from prismatic.vla.constants import IGNORE_INDEX, PROMPT_TEMPLATE, STOP_INDEX, ActionSpace


class ModelSettings(Protocol):
    """What the data side reads from a model config (``OpenVLAConfig`` has it)."""

    image_sizes: list[int]
    empty_token_id: int
    action_token_begin_idx: int

    def get_action_space(self) -> ActionSpace: ...


def build_prompt(task_description: str) -> str:
    return PROMPT_TEMPLATE.format(task_description.lower())


def action_sequence(prompt_ids: torch.Tensor, config: ModelSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """One unpadded prompt -> (ids, labels) of the full training/inference sequence.

    The prompt gets the empty token ("▁") when it does not end in one, then one placeholder action token per action
    value (their embeddings are zeroed in the forward pass, so the id only marks the slot) and STOP. Labels ignore
    the prompt and carry the placeholders and STOP, which is how the model finds the action slots.
    """
    if int(prompt_ids[-1]) != config.empty_token_id:
        prompt_ids = torch.cat([prompt_ids, prompt_ids.new_tensor([config.empty_token_id])])
    n_slots = config.get_action_space().num_action_tokens
    tail = prompt_ids.new_full((n_slots + 1,), config.action_token_begin_idx + 1)
    tail[-1] = STOP_INDEX
    labels = torch.cat([prompt_ids.new_full(prompt_ids.shape, IGNORE_INDEX), tail])
    return torch.cat([prompt_ids, tail]), labels
