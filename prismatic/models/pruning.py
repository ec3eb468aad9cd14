"""LightVLA's parameter-free visual token pruner.

Interface
---------
``TokenPruner(tokens, position_ids, attention_mask, patch_start, num_patches) -> PrunedSequence``

* ``tokens`` (B, S, D): the multimodal sequence ``[prefix | patches | task]``, where ``prefix`` is
  ``tokens[:, :patch_start]`` (the BOS token), ``patches`` the ``num_patches`` projected visual tokens and ``task``
  everything after them (proprio token, prompt, action slots, STOP, right padding).
* ``position_ids`` (B, S) and ``attention_mask`` (B, S, bool; False = padding) travel with the tokens.

Scoring (both modes): every patch builds a query by attending (single head, full width, RMS-normalised, no learned
weights) over the non-padding task tokens; query i scores every patch j with a scaled cosine similarity; each query
picks its best patch.

Scores and the train-mode selection are computed in fp32 whatever the model's precision (also under a bf16
autocast): bf16 scores tie often enough to change the kept set, and a bf16 straight-through sum is no exact one-hot.

* train mode: noise (``noise_scale`` times U[0, 1) as upstream, or Gumbel) is added to the scores, the pick is a hard
  one-hot with a softmax straight-through gradient, all ``num_patches`` slots are kept (slot i becomes a copy of the
  patch it picked, with that patch's position id), so the sequence length does not change. A patch picked by several
  queries fills several slots and so draws more attention than at inference, where it is kept once (upstream);
  ``train_duplicates="unique"`` hides the repeated slots from attention, so training sees what inference sees.
* eval mode: the kept set is the union of the picks, in original order and with original position ids (gaps stay,
  so RoPE distances to the task tokens are preserved). Samples of a batch may keep different numbers of patches: the
  kept patches are packed to the front of the patch segment and the rest of the segment is padding that the
  attention mask hides, so a batch gives the same result as each sample alone.
  ``eval_duplicates="count"`` lets a kept patch count as often as queries picked it: its attention logit as a key
  is raised by log(count) (``PrunedSequence.key_bias``). n identical copies of a key at one position are attended
  exactly like one copy with +log(n), and copies stay identical through every layer, so this is the computation of
  training with ``keep`` at noise 0 on the pruned sequence; ``"once"`` (upstream) attends each kept patch once.

The pruner never changes positions outside the patch segment, so a task position ``i`` of the input sits at
``i - num_patches + result.num_patch_slots`` afterwards (``PrunedSequence.shift_task_positions``).

The statistics of the last call (kept counts and indices) are kept on ``last_stats`` for callers that log them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prismatic.precision import fp32_island

NOISE_DISTRIBUTIONS = ("uniform", "gumbel")
TRAIN_DUPLICATES = ("keep", "unique")
EVAL_DUPLICATES = ("once", "count")


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMS normalisation without a learned scale, computed in fp32 (as upstream) and cast back."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples -log(-log(u)) from u in [0, 1), finite everywhere.

    u = 0 would give -inf: it is raised to the smallest normal float first. Below 1, -log(u) >= 2**-24 > 0, so the
    outer log is always finite.
    """
    u = u.clamp_min(torch.finfo(u.dtype).tiny)
    return -torch.log(-torch.log(u))


@dataclass
class PruningStats:
    """What the pruner kept for each sample of the last batch."""

    kept_counts: torch.Tensor  # (B,) number of distinct patches kept
    kept_indices: list[torch.Tensor]  # per sample: sorted patch indices in [0, num_patches)
    num_patches: int


@dataclass
class PrunedSequence:
    tokens: torch.Tensor  # (B, S', D)
    position_ids: torch.Tensor  # (B, S')
    attention_mask: torch.Tensor  # (B, S') bool
    num_patch_slots: int  # length of the patch segment after pruning
    num_patches: int  # length of the patch segment before pruning
    key_bias: torch.Tensor | None = None  # (B, S') added to every query's attention logit of that key, or None

    def shift_task_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Map sequence positions after the patch segment from the input sequence to the pruned one."""
        return positions - self.num_patches + self.num_patch_slots


def _splice(sequence: tuple, new_segment: tuple, patch_start: int, num_patches: int) -> PrunedSequence:
    """Replace the patch segment of (tokens, position_ids, attention_mask) with the selected one."""
    end = patch_start + num_patches
    tokens, positions, mask = (
        torch.cat([old[:, :patch_start], new, old[:, end:]], 1) for old, new in zip(sequence, new_segment)
    )
    return PrunedSequence(tokens, positions, mask, new_segment[0].shape[1], num_patches)


def kept_order(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) bool -> the patch index of every slot of the pruned segment (B, K) and whether the slot is real (B, K).

    A stable sort puts kept patches first, in their original order; slots past a sample's count are padding.
    """
    counts = keep.sum(-1)
    slots = int(counts.max())
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :slots]
    return order, torch.arange(slots, device=keep.device)[None, :] < counts[:, None]


def keep_patches(sequence: tuple, keep: torch.Tensor, patch_start: int) -> tuple[PrunedSequence, PruningStats]:
    """Drop the patches where ``keep`` (B, P) is False from (tokens, position_ids, attention_mask).

    Kept patches stay in their original order with their original position ids. Samples may keep different numbers:
    they are packed to the front of a segment as long as the largest count, and the slots after a sample's count are
    padding hidden by the attention mask (so a batch gives the same result as each sample alone).
    """
    tokens, position_ids, attention_mask = sequence
    num_patches = keep.shape[1]
    end = patch_start + num_patches
    counts = keep.sum(-1)
    order, valid = kept_order(keep)

    patches = torch.gather(tokens[:, patch_start:end], 1, order[..., None].expand(-1, -1, tokens.shape[-1]))
    new_pos = torch.gather(position_ids[:, patch_start:end], 1, order)
    new_mask = torch.gather(attention_mask[:, patch_start:end], 1, order) & valid
    stats = PruningStats(counts.cpu(), [o[v].cpu() for o, v in zip(order, valid)], num_patches)
    return _splice(sequence, (patches, new_pos, new_mask), patch_start, num_patches), stats


def count_bias(counts: torch.Tensor, pruned: PrunedSequence, patch_start: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, S') key bias: log(picks) on each kept patch slot, 0 everywhere else (padding slots are masked anyway)."""
    order, valid = kept_order(counts > 0)
    slot_bias = counts.gather(1, order).clamp_min(1).to(dtype).log() * valid
    bias = torch.zeros(pruned.tokens.shape[:2], dtype=dtype, device=counts.device)
    bias[:, patch_start : patch_start + order.shape[1]] = slot_bias
    return bias


class TokenPruner(nn.Module):
    """Parameter-free query-based visual token selection (LightVLA, arXiv 2509.12594)."""

    # Pruners that act inside the LLM (FastV) set this to the number of decoder layers run on the full sequence.
    prune_after_layer = 0

    def __init__(
        self, enabled: bool = True, noise: str = "uniform", train_duplicates: str = "keep", eval_duplicates: str = "once"
    ) -> None:
        super().__init__()
        for name, value, choices in (
            ("noise", noise, NOISE_DISTRIBUTIONS),
            ("train_duplicates", train_duplicates, TRAIN_DUPLICATES),
            ("eval_duplicates", eval_duplicates, EVAL_DUPLICATES),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        self.enabled = enabled
        self.noise = noise
        self.train_duplicates = train_duplicates
        self.eval_duplicates = eval_duplicates
        self.noise_scale: float | None = None
        self.last_stats: PruningStats | None = None

    def extra_repr(self) -> str:
        return (
            f"enabled={self.enabled}, noise={self.noise!r}, noise_scale={self.noise_scale}, "
            f"train_duplicates={self.train_duplicates!r}, eval_duplicates={self.eval_duplicates!r}"
        )

    def set_noise_scale(self, noise_scale: float | None) -> None:
        """Training sets this every step (1 -> 0 over the run); ``None`` or 0 means no noise."""
        if noise_scale is not None and not (math.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale}")
        self.noise_scale = noise_scale

    # --- scoring -----------------------------------------------------------------------------------------------------
    @staticmethod
    def score(patches: torch.Tensor, task: torch.Tensor, task_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, P, D), (B, T, D), (B, T) -> (B, P, P) fp32: row i = query of patch i, column j = candidate patch j."""
        with fp32_island(patches.device.type):
            patches_n, task_n = rms_norm(patches.float()), rms_norm(task.float())
            attn_mask = None if task_mask is None else task_mask[:, None, None, :]  # (B, 1, 1, T)
            # One head over the full width; the default SDPA scale is 1/sqrt(D) as upstream.
            queries = F.scaled_dot_product_attention(patches_n[:, None], task_n[:, None], task_n[:, None], attn_mask)
            queries = rms_norm(queries[:, 0])  # (B, P, D)
            return queries @ patches_n.transpose(1, 2) / math.sqrt(patches.shape[-1])

    def _noise(self, score: torch.Tensor) -> torch.Tensor:
        u = torch.rand_like(score, dtype=torch.float32)
        noise = gumbel_from_uniform(u) if self.noise == "gumbel" else u
        return noise * self.noise_scale

    # --- forward -----------------------------------------------------------------------------------------------------
    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        patch_start: int,
        num_patches: int,
    ) -> PrunedSequence:
        if not self.enabled:
            self.last_stats = None
            return PrunedSequence(tokens, position_ids, attention_mask, num_patches, num_patches)

        end = patch_start + num_patches
        patches, task = tokens[:, patch_start:end], tokens[:, end:]
        task_mask = attention_mask[:, end:]
        score = self.score(patches, task, None if bool(task_mask.all()) else task_mask)
        if self.training:
            return self._select_train(tokens, position_ids, attention_mask, patch_start, num_patches, score)
        return self._select_eval(tokens, position_ids, attention_mask, patch_start, num_patches, score)

    def _select_train(self, tokens, position_ids, attention_mask, patch_start, num_patches, score) -> PrunedSequence:
        end = patch_start + num_patches
        patches = tokens[:, patch_start:end]
        if self.noise_scale:
            score = score + self._noise(score)
        picks = score.argmax(-1)  # (B, P): first maximal index on ties, as upstream
        with fp32_island(tokens.device.type):
            hard = F.one_hot(picks, num_patches).float()
            soft = score.softmax(-1)
            # Straight-through: the forward value is exactly the hard one-hot (soft - soft.detach() is exactly 0;
            # upstream's hard + soft - soft.detach() rounds), the gradient that of the softmax. In fp32, so each slot
            # is an exact copy of its patch, then cast back (exact: the copy holds the patch's own value).
            selection = hard + (soft - soft.detach())
            new_patches = (selection @ patches.float()).to(patches.dtype)  # (B, P, P) @ (B, P, D) -> (B, P, D)
        new_pos = torch.gather(position_ids[:, patch_start:end], 1, picks)
        new_mask = torch.gather(attention_mask[:, patch_start:end], 1, picks)
        if self.train_duplicates == "unique":  # only the first slot holding each picked patch stays visible
            occurrence = hard.detach().cumsum(1).gather(2, picks[..., None])[..., 0]  # (B, P): 1 for the first
            new_mask = new_mask & (occurrence == 1)

        kept = [torch.unique(p) for p in picks.detach()]
        self.last_stats = PruningStats(torch.tensor([len(k) for k in kept]), [k.cpu() for k in kept], num_patches)
        return _splice(
            (tokens, position_ids, attention_mask), (new_patches, new_pos, new_mask), patch_start, num_patches
        )

    def _select_eval(self, tokens, position_ids, attention_mask, patch_start, num_patches, score) -> PrunedSequence:
        picks = score.argmax(-1)  # (B, P)
        counts = torch.zeros(tokens.shape[0], num_patches, dtype=torch.long, device=tokens.device)
        counts.scatter_add_(1, picks, torch.ones_like(picks))  # queries that picked each patch
        keep = counts > 0  # union of every query's pick
        pruned, self.last_stats = keep_patches((tokens, position_ids, attention_mask), keep, patch_start)
        if self.eval_duplicates == "count":
            pruned.key_bias = count_bias(counts, pruned, patch_start, tokens.dtype)
        return pruned
