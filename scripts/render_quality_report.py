"""How much render quality "fast" changes the frames: task 0 of every suite, official initial state 0 after the settle
steps, both cameras as the policy sees them; mean and max absolute difference per camera, and a side-by-side picture.

    python scripts/render_quality_report.py --out docs/render_quality.png
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import draccus
import numpy as np

from experiments.robot.libero import libero_utils as lu


@dataclass
class ReportConfig:
    suites: List[str] = field(default_factory=lambda: ["libero_spatial", "libero_object", "libero_goal", "libero_10"])
    task_id: int = 0
    resolution: int = 128
    out: Path = Path("runs/render_quality.png")


def frames(suite: str, task_id: int, resolution: int, quality: str) -> dict[str, np.ndarray]:
    task = lu.get_task(suite, task_id)
    env = lu.make_env(task, resolution=resolution, render_quality=quality)
    try:
        env.seed(0)
        env.reset()
        obs = lu.settle(env, env.set_init_state(lu.get_initial_states(suite, task_id)[0]), lu.NUM_STEPS_WAIT)
        return {"agentview": lu.get_libero_image(obs), "wrist": lu.get_libero_wrist_image(obs)}
    finally:
        lu.close_env(env)


@draccus.wrap()
def main(cfg: ReportConfig) -> None:
    from prismatic.plotting import pyplot, save_figure

    rows = []
    print("| suite (task 0) | camera | mean abs. difference (levels) | max |\n|---|---|---|---|")
    for suite in cfg.suites:
        full, fast = (frames(suite, cfg.task_id, cfg.resolution, q) for q in ("full", "fast"))
        for camera in ("agentview", "wrist"):
            difference = np.abs(full[camera].astype(int) - fast[camera].astype(int))
            print(f"| {suite} | {camera} | {difference.mean():.2f} | {difference.max()} |")
            rows.append((f"{suite} {camera}", full[camera], fast[camera], difference))
    fig, axes = pyplot().subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
    for ax_row, (name, a, b, d) in zip(axes, rows):
        for ax, image, title in zip(ax_row, (a, b, d.max(-1)), ("full", "fast", "|difference| x4")):
            ax.imshow(image if image.ndim == 3 else np.clip(image * 4, 0, 255), cmap=None if image.ndim == 3 else "gray",
                      vmin=0, vmax=255)  # fmt: skip
            ax.set_title(f"{name}: {title}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, str(cfg.out))
    from PIL import Image

    with Image.open(cfg.out) as picture:  # a 256-colour palette: a third of the size, for the docs
        picture = picture.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    picture.save(cfg.out, optimize=True)
    print(f"picture: {cfg.out}")


if __name__ == "__main__":
    main()
