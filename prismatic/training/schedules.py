"""Learning-rate and pruning-noise schedules, as pure functions of the optimizer step (so resuming is exact)."""

import math

import torch

NOISE_SCHEDULES = ("decay", "fixed", "none")
LR_SCHEDULES = ("step", "cosine")
COSINE_FLOOR = 0.01  # the cosine schedule ends at 1% of the base learning rate, not 0: the last steps still learn


def noise_scale(step: int, max_steps: int, schedule: str = "decay") -> float:
    """LightVLA's selection-noise scale: 1 at the start, decaying linearly to 0 at `max_steps`, never negative.

    Upstream computes it from a local counter that restarts at 0 on resume (and goes negative past max_steps);
    here it comes from the global step, which the checkpoint restores. The paper's ablations: "fixed" keeps it at 1,
    "none" trains without noise.
    """
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    if schedule not in NOISE_SCHEDULES:
        raise ValueError(f"noise schedule must be one of {NOISE_SCHEDULES}, got {schedule!r}")
    if schedule != "decay":
        return 1.0 if schedule == "fixed" else 0.0
    return min(1.0, max(0.0, 1.0 - step / max_steps))


def lr_factor(
    step: int, warmup_steps: int, decay_step: int, gamma: float = 0.1, schedule: str = "step", max_steps: int = 0
) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based).

    Linear warmup from 10% to 100% over `warmup_steps`, then either upstream's x`gamma` drop from `decay_step` on
    (``step``, MultiStepLR) or a half cosine from 1 at the end of the warmup to ``COSINE_FLOOR`` at `max_steps`
    (``cosine``; `decay_step` unused). Warmup and decay both apply; upstream's warmup resets the LR every step and
    thereby silently cancels the decay.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    warm = 0.1 + 0.9 * min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "step":
        return warm * (gamma if step >= decay_step else 1.0)
    if max_steps <= warmup_steps:
        raise ValueError(f"the cosine schedule needs max_steps ({max_steps}) > lr_warmup_steps ({warmup_steps})")
    progress = min(1.0, max(0.0, (step - warmup_steps) / (max_steps - warmup_steps)))
    return warm * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, decay_step: int, schedule: str = "step", max_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, decay_step, schedule=schedule, max_steps=max_steps)
    )
