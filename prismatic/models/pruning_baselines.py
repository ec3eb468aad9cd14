"""Training-free visual token pruning baselines, interchangeable with LightVLA's ``TokenPruner``.

Each keeps a fixed budget of visual patches per sample (all of them when the budget is not smaller than the number
of patches), in their original order and with their original position ids, through the same
``keep_patches`` packing as LightVLA's eval mode, and reports the same ``last_stats``:

* ``random_k``: a uniformly random subset, drawn per sample from the pruner's own seeded generator.
* ``text_topk``: the patches the task tokens attend to most: parameter-free cross-attention (RMS-normalised, one
  head, scale 1/sqrt(D)) from every non-padding token after the patch segment to the patches, averaged over those
  tokens (a text-guided selection in the spirit of SparseVLM, without its recycling).
* ``fastv``: FastV (Chen et al., 2024): run the first K decoder layers on the full sequence, rank patches by the
  attention they receive in layer K from the tokens after the patch segment (mean over heads and those tokens),
  keep the top ``budget`` for the remaining layers.

They are selected at load or evaluation time (``set_visual_token_pruner``); none has weights, so checkpoints are
unaffected, and all behave the same in train and eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prismatic.models.pruning import PruningStats, TokenPruner, keep_patches, rms_norm

BASELINE_PRUNERS = ("random_k", "text_topk", "fastv")
DEFAULT_FASTV_LAYER = 2  # FastV's K: its paper prunes after layer 2


def top_k_mask(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """(B, P) scores -> (B, P) bool with the ``budget`` highest per row True."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    return keep.scatter_(1, scores.topk(min(budget, scores.shape[1]), dim=1).indices, True)


def mean_over_task_tokens(weights: torch.Tensor, task_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, P) attention of task tokens to patches, (B, T) non-padding -> (B, P) mean over the real task tokens."""
    return (weights * task_mask[..., None]).sum(1) / task_mask.sum(1, keepdim=True)


class BudgetPruner(nn.Module):
    """Common part of the baselines: a token budget, the pruner switches, statistics of the last call."""

    prune_after_layer = 0

    def __init__(self, budget: int) -> None:
        super().__init__()
        if budget < 1:
            raise ValueError(f"the visual token budget must be at least 1, got {budget}")
        self.budget = budget
        self.enabled = True
        self.last_stats: PruningStats | None = None

    def extra_repr(self) -> str:
        return f"budget={self.budget}"

    def set_noise_scale(self, noise_scale: float | None) -> None:
        raise RuntimeError(f"{type(self).__name__} is a training-free baseline; fine-tune with the LightVLA pruner")

    def patch_scores(self, patches: torch.Tensor, task: torch.Tensor, task_mask: torch.Tensor, **kwargs):
        """(B, P, D), (B, T, D), (B, T) -> (B, P): higher is kept first."""
        raise NotImplementedError

    def forward(self, tokens, position_ids, attention_mask, patch_start: int, num_patches: int, **kwargs):
        end = patch_start + num_patches
        scores = self.patch_scores(
            tokens[:, patch_start:end], tokens[:, end:], attention_mask[:, end:], patch_start=patch_start, **kwargs
        )
        pruned, self.last_stats = keep_patches(
            (tokens, position_ids, attention_mask), top_k_mask(scores, self.budget), patch_start
        )
        return pruned


class RandomKPruner(BudgetPruner):
    def __init__(self, budget: int, seed: int = 0) -> None:
        super().__init__(budget)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self) -> None:
        self.generator.manual_seed(self.seed)

    def patch_scores(self, patches, task, task_mask, **kwargs):
        # One permutation per sample in batch order: sample b of a batch draws what it would draw alone after b calls.
        ranks = torch.stack([torch.randperm(patches.shape[1], generator=self.generator) for _ in range(len(patches))])
        return (-ranks).to(patches.device).float()


class TextTopKPruner(BudgetPruner):
    def patch_scores(self, patches, task, task_mask, **kwargs):
        patches_n, task_n = rms_norm(patches).float(), rms_norm(task).float()
        logits = task_n @ patches_n.transpose(1, 2) / math.sqrt(patches.shape[-1])  # (B, T, P)
        return mean_over_task_tokens(logits.softmax(-1), task_mask)


class FastVPruner(BudgetPruner):
    def __init__(self, budget: int, layer: int = DEFAULT_FASTV_LAYER) -> None:
        super().__init__(budget)
        if layer < 1:
            raise ValueError(f"FastV prunes after at least one decoder layer, got layer={layer}")
        self.prune_after_layer = layer

    def extra_repr(self) -> str:
        return f"budget={self.budget}, layer={self.prune_after_layer}"

    def patch_scores(self, patches, task, task_mask, attention=None, patch_start=1, **kwargs):
        if attention is None:
            raise ValueError("FastV scores patches with the LLM's attention; it runs inside the LLM forward")
        end = patch_start + patches.shape[1]
        received = attention(query_start=end)[:, :, patch_start:end]  # (B, T, P): task tokens attending to patches
        return mean_over_task_tokens(received, task_mask)


def make_pruner(name: str, budget: int | None = None, fastv_layer: int = DEFAULT_FASTV_LAYER, seed: int = 0):
    """``lightvla`` (parameter-free, budget-free), ``none`` (keep everything) or a baseline with a budget."""
    if name in ("lightvla", "none"):
        return TokenPruner(enabled=name == "lightvla")
    if name not in BASELINE_PRUNERS:
        choices = ", ".join(("lightvla", "none") + BASELINE_PRUNERS)
        raise ValueError(f"unknown visual token pruner {name!r}; choose one of {choices}")
    if budget is None:
        raise ValueError(f"the {name} baseline needs a token budget (number of visual patches to keep)")
    if name == "random_k":
        return RandomKPruner(budget, seed)
    if name == "text_topk":
        return TextTopKPruner(budget)
    return FastVPruner(budget, fastv_layer)


def set_visual_token_pruner(vla: nn.Module, pruner: nn.Module) -> None:
    """Install ``pruner`` (from ``make_pruner``) on a loaded model, in the model's train/eval mode.

    The mode matters for LightVLA's pruner: only eval mode drops tokens (train mode keeps every slot).
    """
    layers = vla.config.text_config.num_hidden_layers
    if pruner.prune_after_layer >= layers:
        raise ValueError(f"cannot prune after layer {pruner.prune_after_layer}: the LLM has {layers} layers")
    vla.pruner = pruner.train(vla.training)
