"""Camera frames -> policy images, exactly as upstream's TensorFlow pipeline makes them, without TensorFlow.

Upstream (OpenVLA-OFT, LightVLA) preprocesses images with TensorFlow, and the released checkpoints were trained and
evaluated on its output, so each function here reproduces one TensorFlow operation in float32 and in TensorFlow's
order of operations (checked against recorded TensorFlow outputs in ``tests/test_image_pipeline.py``):

* ``jpeg_roundtrip``: ``tf.image.encode_jpeg`` (quality 95, 4:2:0 chroma, 300 dpi; Pillow's libjpeg-turbo writes the
  very same bytes) followed by ``tf.io.decode_image`` (libjpeg-turbo's fast integer IDCT with fancy upsampling, which
  is simplejpeg's ``fastdct=True``; the accurate IDCT of PIL/OpenCV differs by up to 18 levels).
* ``resize_lanczos3``: ``tf.image.resize(method="lanczos3", antialias=True)``, i.e. the ScaleAndTranslate kernel
  (weights computed in float32 with the C library's ``sinf``; a vertical pass then a horizontal one, each a sequential
  float32 sum), followed by ``tf.round`` (half to even), clipping and ``uint8``.
* ``crop_and_resize``: ``tf.image.crop_and_resize`` (bilinear, box corners on pixel centres, x before y).
* ``to_float`` / ``to_uint8``: ``tf.image.convert_image_dtype`` both ways (x * float32(1/255); truncate(x * 255.5)).
* brightness, contrast, saturation and hue in ``ImageAugmentation``: ``tf.image.adjust_*`` on float images (within one
  level of TensorFlow: its HSV conversion rounds differently in the last bit).

Pipelines built from them:

* ``resize_image_for_policy``: upstream's function of that name (JPEG round trip + lanczos3). Every LIBERO evaluation
  frame takes it, and so does every training frame read from LIBERO HDF5 files, because the RLDS frames the released
  models were trained on were stored as exactly such JPEGs and decoded and resized the same way.
* ``center_crop``: upstream's ``center_crop_image`` (the centred square of 90% of the area, resized back) at evaluation.
* ``ImageAugmentation``: dlimp's ``augment_image`` as upstream configures it for training. Its random crop draws ONE
  offset for both axes (upstream passes the same seed and shape to both draws), so the crop slides along the diagonal.

Images are uint8 arrays (H, W, 3), as the simulator and the robot deliver them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

f32 = np.float32
CENTER_CROP_AREA = 0.9  # training crops 90% of the area at random; evaluation takes the centred crop
JPEG_QUALITY = 95  # tf.image.encode_jpeg's default, as used by upstream and by the RLDS dataset builder


def _c_sinf():
    """The C library's single-precision sine, which TensorFlow's kernel uses (it is not correctly rounded: it differs
    from the rounded double-precision sine for ~1% of arguments, and that shows in the resized pixels)."""
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        sinf = libm.sinf
        sinf.restype, sinf.argtypes = ctypes.c_float, [ctypes.c_float]
        return lambda x: f32(sinf(float(x)))
    except (OSError, AttributeError):  # no C math library: agree with TensorFlow except in the last bit, rarely
        return lambda x: f32(math.sin(float(x)))


_sinf = _c_sinf()


# --- JPEG --------------------------------------------------------------------------------------------------------------
def encode_jpeg(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> the bytes ``tf.image.encode_jpeg`` writes with its defaults."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(
        buffer, "JPEG", quality=JPEG_QUALITY, subsampling=2, dpi=(300, 300)
    )
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 (H, W, 3) as ``tf.io.decode_image`` decodes them (fast integer IDCT)."""
    import simplejpeg

    return simplejpeg.decode_jpeg(data, fastdct=True, fastupsample=False)


def jpeg_roundtrip(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> the same image after ``tf.image.encode_jpeg`` and ``tf.io.decode_image``."""
    return decode_jpeg(encode_jpeg(image))


# --- lanczos3 resize (ScaleAndTranslate) -------------------------------------------------------------------------------
def _lanczos3(x: np.float32) -> np.float32:
    """TensorFlow's LanczosKernelFunc(3) in float32, operation for operation."""
    pi, radius = f32(3.14159265359), f32(3.0)
    x = f32(abs(x))
    if x > radius:
        return f32(0.0)
    if x <= f32(1e-3):
        return f32(1.0)
    a = f32(pi * x)
    numerator = f32(f32(radius * _sinf(a)) * _sinf(f32(a / radius)))
    return f32(numerator / f32(f32(f32(pi * pi) * x) * x))


@lru_cache(maxsize=32)
def _spans(out_size: int, in_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(out_size,) first input index and (out_size, taps) weights of each output pixel along one axis."""
    inv_scale = f32(1.0 / float(f32(f32(out_size) / f32(in_size))))
    kernel_scale = max(inv_scale, f32(1.0))  # antialias: widen the kernel when shrinking
    radius = f32(f32(3.0) * kernel_scale)
    taps = min(2 * math.ceil(radius) + 1, in_size)
    inverse_kernel_scale = f32(f32(1.0) / kernel_scale)
    starts = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, taps), np.float32)
    for x in range(out_size):
        sample = f32(f32(f32(x) + f32(0.5)) * inv_scale)
        start = min(max(math.ceil(f32(f32(sample - radius) - f32(0.5))), 0), in_size - 1)
        end = min(max(math.floor(f32(f32(sample + radius) - f32(0.5))), 0), in_size - 1) + 1
        raw = [_lanczos3(f32(f32(f32(f32(s) + f32(0.5)) - sample) * inverse_kernel_scale)) for s in range(start, end)]
        total = f32(0.0)
        for w in raw:
            total = f32(total + w)
        inverse_total = f32(f32(1.0) / total)
        weights[x, : len(raw)] = [f32(w * inverse_total) for w in raw]
        starts[x] = start
    return torch.from_numpy(starts), torch.from_numpy(weights)


def _weighted_sum(image: torch.Tensor, starts: torch.Tensor, weights: torch.Tensor, axis: int) -> torch.Tensor:
    """Sum of ``weights[o, k] * image[starts[o] + k]`` along ``axis``, accumulated tap by tap in float32."""
    shape = [1] * image.ndim
    shape[axis] = -1
    total = None
    for k in range(weights.shape[1]):
        taken = image.index_select(axis, (starts + k).clamp(max=image.shape[axis] - 1))  # weight 0 past the edge
        term = taken * weights[:, k].view(shape)
        total = term if total is None else total + term
    return total


def resize_float(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (size, size, 3): ``tf.image.resize(lanczos3, antialias=True)`` before rounding."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float()
    x = _weighted_sum(x, *_spans(size, image.shape[0]), axis=0)
    return _weighted_sum(x, *_spans(size, image.shape[1]), axis=1)


def resize_lanczos3(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3), as upstream: lanczos3, ``tf.round`` (half to even), clip, cast.

    At the same size the kernel is the identity (every other tap falls on a zero of the sinc), so that is skipped.
    """
    if image.shape[:2] == (size, size):
        return image
    return torch.round(resize_float(image, size)).clamp(0, 255).to(torch.uint8).numpy()


def resize_image_for_policy(image: np.ndarray, size: int) -> np.ndarray:
    """Upstream's ``resize_image_for_policy``: JPEG round trip (as the RLDS frames were stored), then lanczos3."""
    return resize_lanczos3(jpeg_roundtrip(image), size)


# --- crops ------------------------------------------------------------------------------------------------------------
def to_float(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 in [0, 1], as ``tf.image.convert_image_dtype``."""
    # torch.tensor copies, so read-only arrays (memory-mapped or cached frames) convert without a warning.
    return torch.tensor(image, dtype=torch.float32) * torch.tensor(f32(1 / 255))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float in [0, 1] -> uint8, as ``tf.image.convert_image_dtype(saturate=True)``: truncate(x * 255.5)."""
    return (image.clamp(0, 1) * torch.tensor(f32(255.5))).to(torch.uint8).numpy()


def _sample_points(low: np.ndarray, high: np.ndarray, in_size: int, out_size: int):
    """Per box (rows of ``low``/``high``): the two neighbouring input indices and the lerp weight of each output pixel,
    in float32 and in TensorFlow's order of operations."""
    low, high = np.asarray(low, np.float32)[:, None], np.asarray(high, np.float32)[:, None]
    scale = ((high - low) * f32(in_size - 1) / f32(out_size - 1)).astype(np.float32)
    position = (low * f32(in_size - 1) + np.arange(out_size, dtype=np.float32) * scale).astype(np.float32)
    below, above = np.floor(position), np.ceil(position)
    lerp = (position - below).astype(np.float32)
    return (torch.from_numpy(below.astype(np.int64)), torch.from_numpy(above.astype(np.int64)), torch.from_numpy(lerp))


def crop_and_resize(images: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """float (B, H, W, C) or (H, W, C), boxes (B, 4) or (4,) as [y1, x1, y2, x2] in [0, 1] (0 and 1 = centres of the
    first and last pixels) -> float (B, size, size, C), bilinear, as ``tf.image.crop_and_resize`` (boxes inside the
    image: no extrapolation)."""
    single = images.ndim == 3
    images, boxes = (images[None], np.asarray(boxes)[None]) if single else (images, np.asarray(boxes))
    top, bottom, y_lerp = _sample_points(boxes[:, 0], boxes[:, 2], images.shape[1], size)
    left, right, x_lerp = _sample_points(boxes[:, 1], boxes[:, 3], images.shape[2], size)
    batch = images.shape[0]

    def take(x, index, dim):  # x (B, ..., C) -> entries `index` (B, size) along `dim`, for every other position
        shape = [batch] + [1] * (x.ndim - 2) + [1]
        shape[dim] = size
        expanded = list(x.shape)
        expanded[dim] = size
        return torch.gather(x, dim, index.view(shape).expand(expanded))

    upper, lower = take(images, top, 1), take(images, bottom, 1)  # (B, size, W, C)
    upper_left, lower_left = take(upper, left, 2), take(lower, left, 2)  # (B, size, size, C)
    x_lerp = x_lerp[:, None, :, None]
    upper = upper_left + (take(upper, right, 2) - upper_left) * x_lerp
    lower = lower_left + (take(lower, right, 2) - lower_left) * x_lerp
    out = upper + (lower - upper) * y_lerp[:, :, None, None]
    return out[0] if single else out


def square_box(area: float, offset: float) -> np.ndarray:
    """The square box covering ``area`` of the image at ``offset`` along the diagonal (0.5: centred), as upstream's
    crops build it in float32: side sqrt(area), corner offset * (1 - side)."""
    side = np.clip(np.sqrt(f32(area)), f32(0), f32(1)).astype(np.float32)
    corner = f32(f32(offset) * f32(f32(1) - side))  # offset 0.5: (1 - side) / 2 exactly, as the centre crop has it
    return np.array([corner, corner, f32(corner + side), f32(corner + side)], np.float32)


def center_crop(image: np.ndarray, area: float = CENTER_CROP_AREA) -> np.ndarray:
    """Upstream's ``center_crop_image``: the centred square of ``area``, resized back to the image size."""
    return to_uint8(crop_and_resize(to_float(image), square_box(area, 0.5), image.shape[0]))


def prepare_image(image: np.ndarray, size: int, use_center_crop: bool = True) -> np.ndarray:
    """Upstream's ``prepare_images_for_vla`` for one image: resize_image_for_policy unless it already has the policy's
    size, then the center crop."""
    if image.shape[:2] != (size, size):
        image = resize_image_for_policy(image, size)
    return center_crop(image) if use_center_crop else image


# --- colour (HSV as TensorFlow's adjust_saturation / adjust_hue) -------------------------------------------------------
def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb.unbind(-1)
    value, _ = rgb.max(-1)
    minimum, _ = rgb.min(-1)
    delta = value - minimum
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = delta.clamp_min(1e-12)
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value], -1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = (c[..., None] for c in hsv.unbind(-1))
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return value - value * saturation * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return float(low + (high - low) * torch.rand((), generator=generator))


@dataclass(frozen=True)
class ImageAugmentation:
    """dlimp's ``augment_image`` with upstream's settings: crop, brightness, contrast, saturation, hue, in that order,
    on float images clipped to [0, 1] after every step. Randomness comes from the caller's generator."""

    crop_area: float = 0.9
    brightness: float = 0.2  # max additive delta
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.05  # max shift, as a fraction of the hue circle

    def sample(self, generator: torch.Generator | None = None) -> tuple[float, float, float, float, float]:
        """(crop offset along the diagonal, brightness delta, contrast factor, saturation factor, hue delta)."""
        return (
            _uniform(0.0, 1.0, generator),
            _uniform(-self.brightness, self.brightness, generator),
            _uniform(*self.contrast, generator),
            _uniform(*self.saturation, generator),
            _uniform(-self.hue, self.hue, generator),
        )

    def __call__(self, image: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        return self.batch(image[None], [generator])[0]

    def batch(self, images: np.ndarray, generators: list[torch.Generator | None]) -> np.ndarray:
        """uint8 (B, H, W, 3), one generator per image (its draws decide that image's augmentation)."""
        offsets, *colours = zip(*(self.sample(g) for g in generators))
        boxes = np.stack([square_box(self.crop_area, offset) for offset in offsets])
        return self.apply(images, boxes, *colours)

    @staticmethod
    def apply(images: np.ndarray, boxes, brightness, contrast, saturation, hue) -> np.ndarray:
        """uint8 (B, H, W, 3) with per-image parameters (boxes (B, 4), the rest (B,)) -> uint8 (B, H, W, 3)."""

        def per_image(values):
            return torch.as_tensor(np.asarray(values, np.float32))[:, None, None, None]

        x = crop_and_resize(to_float(images), boxes, images.shape[1]).clamp(0, 1)
        x = (x + per_image(brightness)).clamp(0, 1)
        mean = x.mean(dim=(1, 2), keepdim=True)
        x = ((x - mean) * per_image(contrast) + mean).clamp(0, 1)
        hsv = _rgb_to_hsv(x)
        hsv[..., 1] = (hsv[..., 1] * per_image(saturation)[..., 0]).clamp(0, 1)
        x = _hsv_to_rgb(hsv).clamp(0, 1)
        hsv = _rgb_to_hsv(x)
        hsv[..., 0] = (hsv[..., 0] + per_image(hue)[..., 0]) % 1.0
        return to_uint8(_hsv_to_rgb(hsv))
