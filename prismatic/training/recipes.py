"""The embedded default's two-stage recipe (LightVLA as the paper trains it, at CPU size), written once: the quickstart
(``scripts/quickstart.sh``, through the command line below) and the study (``experiments/robot/libero/study.py``) both
read it, so a change here changes both.

    python -m prismatic.training.recipes stage1 1800               # finetune.py flags of stage 1, 1,800 steps
    python -m prismatic.training.recipes stage2 500 runs/oft       # stage 2 from that stage-1 folder

Logging, data and run-folder flags are the caller's; these are the ones that decide what is learnt.
"""

import sys
from typing import Any

STAGE1_LEARNING_RATE = 1e-3
STAGE2_LEARNING_RATE = 1e-4  # 3e-4 pruned harder (4.6 kept) and lost successes (README)


def stage1(steps: int, preset: str = "libero-cpu") -> dict[str, Any]:
    """OpenVLA-OFT from scratch on a preset: every parameter, pruning off; the learning rate warms up over 50 steps
    and drops tenfold after 5/7 of the steps."""
    return dict(
        vla_path=preset, prune_visual_tokens=False, use_lora=False, learning_rate=STAGE1_LEARNING_RATE,
        lr_warmup_steps=50, max_steps=steps, num_steps_before_decay=steps * 5 // 7,
    )  # fmt: skip


def stage2(steps: int, stage1_folder: str, learning_rate: float = STAGE2_LEARNING_RATE) -> dict[str, Any]:
    """LightVLA from the stage-1 folder: pruning on (noise decaying 1 -> 0 by default), the stage-1 action head and
    proprio projector carried over (fresh heads, as upstream, lost the skill at this size: README), every parameter;
    the learning rate drops tenfold after 3/4 of the steps."""
    return dict(
        vla_path=str(stage1_folder), prune_visual_tokens=True, use_lora=False, reuse_heads=True,
        learning_rate=learning_rate, max_steps=steps, num_steps_before_decay=steps * 3 // 4,
    )  # fmt: skip


def as_flags(values: dict[str, Any]) -> list[str]:
    return [part for key, value in values.items() for part in (f"--{key}", str(value))]


def main(argv: list[str]) -> str:
    usage = "usage: python -m prismatic.training.recipes stage1 STEPS [PRESET] | stage2 STEPS STAGE1_FOLDER"
    if len(argv) < 2 or argv[0] not in ("stage1", "stage2") or not argv[1].isdigit():
        raise SystemExit(usage)
    if argv[0] == "stage1":
        return " ".join(as_flags(stage1(int(argv[1]), *argv[2:3])))
    if len(argv) != 3:
        raise SystemExit(usage)
    return " ".join(as_flags(stage2(int(argv[1]), argv[2])))


if __name__ == "__main__":
    print(main(sys.argv[1:]))
