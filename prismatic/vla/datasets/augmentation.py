"""Training-time image augmentation as upstream's RLDS pipeline applies it (spec §5.2), on PIL images.

Order: random square crop of 90% of the area (resized back), then brightness, contrast, saturation and hue, each on
float images in [0, 1] and clipped after every step. The colour operations follow TensorFlow's definitions
(`tf.image.random_*`), which differ from torchvision's ColorJitter: brightness adds a delta, contrast scales around
each channel's mean, saturation and hue act in HSV space. Randomness comes from the
caller's generator (the dataset seeds one per sample from the run seed, the epoch and the sample index, so that a
resumed run or a different number of workers sees the same augmentations).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TVF
from PIL import Image


def square_crop(image: Image.Image, area: float, offset: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    """Crop a square-aspect window covering `area` of the image at `offset` (fractions of the free margin: 0.5, 0.5
    is the centre) and resize it back to the image size (bilinear). Evaluation uses the centre crop."""
    width, height = image.size
    side = float(np.sqrt(area))
    crop_h, crop_w = round(height * side), round(width * side)
    top, left = round(offset[0] * (height - crop_h)), round(offset[1] * (width - crop_w))
    return TVF.resized_crop(
        image, top, left, crop_h, crop_w, [height, width], interpolation=TVF.InterpolationMode.BILINEAR, antialias=True
    )


def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb.unbind(0)
    value, _ = rgb.max(0)
    minimum, _ = rgb.min(0)
    delta = value - minimum
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = delta.clamp_min(1e-12)
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = hsv.unbind(0)
    sector = hue * 6.0
    k = torch.stack([(5.0 + sector) % 6.0, (3.0 + sector) % 6.0, (1.0 + sector) % 6.0])
    return value - value * saturation * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return float(low + (high - low) * torch.rand((), generator=generator))


@dataclass(frozen=True)
class ImageAugmentation:
    crop_area: float = 0.9
    brightness: float = 0.2  # max additive delta
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.05  # max shift, as a fraction of the hue circle

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        offset = (_uniform(0, 1, generator), _uniform(0, 1, generator))
        image = square_crop(image, self.crop_area, offset)
        x = TVF.to_tensor(image)  # (3, H, W) float in [0, 1]
        x = (x + _uniform(-self.brightness, self.brightness, generator)).clamp(0, 1)
        mean = x.mean(dim=(1, 2), keepdim=True)
        x = ((x - mean) * _uniform(*self.contrast, generator) + mean).clamp(0, 1)
        hsv = _rgb_to_hsv(x)
        hsv[1] = (hsv[1] * _uniform(*self.saturation, generator)).clamp(0, 1)
        hsv[0] = (hsv[0] + _uniform(-self.hue, self.hue, generator)) % 1.0
        x = _hsv_to_rgb(hsv).clamp(0, 1)
        return TVF.to_pil_image(x)
