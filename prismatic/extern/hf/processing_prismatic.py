"""Image processor and processor of the Prismatic / OpenVLA checkpoints.

Gives the same tensors as the released processors: each image is resized to 224x224 (bicubic, antialiased),
center-cropped, scaled to [0, 1] and normalised once per featurizer, so a fused (DINOv2 + SigLIP) model gets 6
channels per image. Several images of one sample are concatenated along channels in the order given
([third-person, wrist, ...]).

The normalisation used at inference is ``tvf_normalize_params``, which the released ``preprocessor_config.json`` stores
with DINOv2's ImageNet statistics rounded through bfloat16 (mean [0.484375, 0.455078125, 0.40625]); a freshly built
processor reproduces that rounding so new checkpoints match old ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TVF
from PIL import Image
from torchvision.transforms import InterpolationMode
from transformers import AutoTokenizer, BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
_INTERPOLATIONS = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # PIL codes, as stored in tvf_resize_params
_PIL_CODE_TO_MODE = {3: InterpolationMode.BICUBIC, 2: InterpolationMode.BILINEAR, 0: InterpolationMode.NEAREST}


def _bf16_round(values: Sequence[float]) -> list[float]:
    return torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).float().tolist()


def to_pil_rgb(image: Any) -> Image.Image:
    """Accept a PIL image or a uint8 (H, W, 3) array; anything else is an error that says what is expected."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image with values in [0, 255], got dtype {array.dtype}")
    return Image.fromarray(array)


class PrismaticImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(
        self,
        use_fused_vision_backbone: bool = False,
        image_resize_strategy: str = "letterbox",
        input_sizes: list[list[int]] | None = None,
        interpolations: list[str] | None = None,
        means: list[list[float]] | None = None,
        stds: list[list[float]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.use_fused_vision_backbone = use_fused_vision_backbone
        self.image_resize_strategy = image_resize_strategy
        self.input_sizes = input_sizes or [[3, 224, 224]]
        self.interpolations = interpolations or ["bicubic"]
        self.means = means or [list(IMAGENET_MEAN)]
        self.stds = stds or [list(IMAGENET_STD)]
        n = len(self.input_sizes)
        self.tvf_resize_params = [
            {"size": list(s[-2:]), "interpolation": _INTERPOLATIONS[i], "max_size": None, "antialias": True}
            for s, i in zip(self.input_sizes, self.interpolations)
        ]
        self.tvf_crop_params = [{"output_size": list(s[-2:])} for s in self.input_sizes]
        self.tvf_normalize_params = [
            {"mean": _bf16_round(m), "std": _bf16_round(s), "inplace": False} for m, s in zip(self.means, self.stds)
        ]
        self.tvf_do_letterbox, self.tvf_letterbox_fill = False, None
        if len(self.interpolations) != n or len(self.means) != n or len(self.stds) != n:
            raise ValueError("input_sizes, interpolations, means and stds need one entry per featurizer")
        # Values saved in preprocessor_config.json (kwargs) override the recomputed ones, as in the released files.
        super().__init__(**kwargs)
        if self.image_resize_strategy != "resize-naive":
            raise NotImplementedError(
                f"image_resize_strategy {self.image_resize_strategy!r} is not supported; OpenVLA checkpoints use "
                "'resize-naive'"
            )

    @property
    def num_channels(self) -> int:
        return 3 * len(self.tvf_normalize_params)

    def apply_transform(self, image: Any) -> torch.Tensor:
        """One image -> (3 * featurizers, H, W)."""
        image = to_pil_rgb(image)
        outputs = []
        for k, (resize, crop) in enumerate(zip(self.tvf_resize_params, self.tvf_crop_params)):
            mode = _PIL_CODE_TO_MODE[resize["interpolation"]]
            x = TVF.resize(
                image, resize["size"], interpolation=mode, max_size=resize["max_size"], antialias=resize["antialias"]
            )
            x = np.array(TVF.center_crop(x, crop["output_size"]))  # a copy: PIL's buffer is read-only for torch
            outputs.append(self._normalize(torch.from_numpy(x)[None].permute(0, 3, 1, 2).float().div(255), k)[0])
        return torch.cat(outputs, dim=0)

    def normalize_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) already at the input size -> (B, 3 * featurizers, H, W): ``apply_transform`` of a batch,
        whose resize and crop are then the identity (PIL returns a same-size resize unchanged)."""
        expected = [tuple(size[-2:]) for size in self.input_sizes]
        if any(images.shape[1:3] != size for size in expected):
            raise ValueError(f"images of shape {images.shape[1:3]} need resizing to {expected}: use apply_transform")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
        return torch.cat([self._normalize(x, k) for k in range(len(self.tvf_normalize_params))], dim=1)

    def _normalize(self, x: torch.Tensor, featurizer: int) -> torch.Tensor:
        norm = self.tvf_normalize_params[featurizer]
        return TVF.normalize(x, mean=norm["mean"], std=norm["std"])

    def preprocess(self, images: Any, return_tensors: str | None = None, **_: Any) -> BatchFeature:
        """``images``: one image, a list of images (a batch), or a list of lists (a batch of several images each)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        samples = [
            torch.cat([self.apply_transform(im) for im in item], 0) if isinstance(item, (list, tuple))
            else self.apply_transform(item)
            for item in images
        ]  # fmt: skip
        if len({s.shape[0] for s in samples}) > 1:
            raise ValueError("every sample of a batch needs the same number of images")
        return BatchFeature({"pixel_values": torch.stack(samples).float().numpy()}, tensor_type=return_tensors)

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)


class PrismaticProcessor:
    """Tokenizer + image processor, saved and loaded in the released layout.

    ``preprocessor_config.json`` holds the image processor, the tokenizer files sit beside it; transformers 5's
    combined ``processor_config.json`` is not used, so folders stay readable by the original code.
    """

    def __init__(self, image_processor: PrismaticImageProcessor, tokenizer: Any) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs: Any) -> PrismaticProcessor:
        from prismatic.extern.hf import register_auto_classes

        if not Path(folder, "preprocessor_config.json").exists():
            raise FileNotFoundError(f"{folder} has no preprocessor_config.json; it is not a processor folder")
        # Released folders name remote code in `auto_map`: with our classes registered and remote code refused,
        # transformers neither asks "Do you wish to run the custom code?" nor waits for an answer.
        register_auto_classes()
        tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="right", trust_remote_code=False)
        return cls(PrismaticImageProcessor.from_pretrained(folder), tokenizer)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.image_processor.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def __call__(
        self,
        text: str | list[str],
        images: Any,
        padding: bool | str = True,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Prompt(s) and image(s) -> ``input_ids``, ``attention_mask`` (right-padded) and ``pixel_values``."""
        pixel_values = self.image_processor(images, return_tensors=return_tensors)["pixel_values"]
        text_inputs = self.tokenizer(
            text, return_tensors=return_tensors, padding=padding, truncation=truncation, max_length=max_length
        )
        if pixel_values.shape[0] != text_inputs.input_ids.shape[0]:
            raise ValueError(
                f"got {text_inputs.input_ids.shape[0]} prompt(s) but {pixel_values.shape[0]} image sample(s); "
                "pass one prompt per sample"
            )
        return BatchFeature(data={**text_inputs, "pixel_values": pixel_values})

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)
