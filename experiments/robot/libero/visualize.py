"""Pictures of evaluation episodes: rollout videos and which visual patches the pruner kept."""

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from prismatic.vla.image_pipeline import center_crop

PANEL_SIZE = 224  # pixels per camera panel of the pictures


def save_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """An mp4 of the (upright) third-person frames, written under a temporary name and renamed when complete."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.stem + ".partial.mp4")
    with imageio.get_writer(staging, fps=fps, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.asarray(frame))
    staging.replace(path)
    return path


def pruning_overlay(image: np.ndarray, kept: list[int], grid: int, crop: bool = True) -> Image.Image:
    """The image as the policy saw it, with dropped patches darkened and kept ones outlined."""
    image = np.asarray(image)
    picture = Image.fromarray(center_crop(image) if crop else image).convert("RGB")
    picture = picture.resize((PANEL_SIZE, PANEL_SIZE), Image.Resampling.BICUBIC)
    dark = Image.blend(picture, Image.new("RGB", picture.size), 0.65)
    cell = PANEL_SIZE / grid
    mask = Image.new("L", picture.size, 0)
    draw_mask = ImageDraw.Draw(mask)
    for index in kept:
        row, col = divmod(index, grid)
        draw_mask.rectangle([col * cell, row * cell, (col + 1) * cell - 1, (row + 1) * cell - 1], fill=255)
    out = Image.composite(picture, dark, mask)
    draw = ImageDraw.Draw(out)
    for index in kept:
        row, col = divmod(index, grid)
        draw.rectangle([col * cell, row * cell, (col + 1) * cell - 1, (row + 1) * cell - 1], outline=(255, 200, 0))
    return out


def camera_panels(observation: dict, kept_indices: list[int], num_patches: int, num_images: int) -> list[Image.Image]:
    """One overlay per camera the policy saw (`kept_indices` index the `num_patches` patches of all images, image
    after image)."""
    images = [observation["full_image"]] + [observation[k] for k in sorted(observation) if "wrist" in k]
    per_image = num_patches // num_images
    grid = math.isqrt(per_image)
    return [
        pruning_overlay(im, [i - k * per_image for i in kept_indices if k * per_image <= i < (k + 1) * per_image], grid)
        for k, im in enumerate(images[:num_images])
    ]


def save_pruning_video(path: Path, steps: list, num_patches: int, num_images: int, fps: int = 20) -> Path:
    """An mp4 of the cameras side by side, each step showing the patches kept by the query whose actions run then."""
    frames = []
    for observation, kept in steps:
        panels = camera_panels(observation, kept, num_patches, num_images)
        frames.append(np.concatenate([np.asarray(p) for p in panels], axis=1))
    return save_video(path, frames, fps)


def save_pruning_picture(
    path: Path, observation: dict, kept_indices: list[int], num_patches: int, num_images: int, title: str
) -> Path:
    """Both camera views side by side with the kept patches of one policy query (`kept_indices` index the
    `num_patches` patches of all images, image after image)."""
    panels = camera_panels(observation, kept_indices, num_patches, num_images)
    header = 28
    canvas = Image.new("RGB", (PANEL_SIZE * len(panels), PANEL_SIZE + header), "white")
    for k, panel in enumerate(panels):
        canvas.paste(panel, (k * PANEL_SIZE, header))
    caption = f"{title[:60]} | kept {len(kept_indices)}/{num_patches} patches"
    ImageDraw.Draw(canvas).text((4, 4), caption, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
