"""One precision policy for training, evaluation and serving, the same on every device.

``--precision bf16`` (the default on CUDA, as upstream) or ``fp32`` (the default elsewhere); ``auto`` picks by
device. The CPU honours bf16 too (CPU autocast supports it), so the code path users run on GPUs is tested here.

What bf16 means, part by part:

* frozen weights (the base model under LoRA; at inference the LLM): stored in bf16;
* at inference the vision backbone and projector stay fp32: their output is what the pruner scores, and computing
  it in bf16 moves ~2% of the kept patches (kept sets bf16 vs fp32: Jaccard 0.98 on the tiny preset), while in fp32
  the kept set is exactly fp32's and the actions differ only by the LLM's bf16 rounding (``prepare_for_inference``);
* trained weights (LoRA adapters, full fine-tuning's model weights, action head, proprio projector): stored in fp32,
  so the optimizer updates fp32 master weights and keeps fp32 state (small AdamW steps on bf16 weights round away);
* compute: matmuls under ``torch.autocast(bfloat16)`` in training; at inference the bf16 weights set it;
* the pruner's scores and straight-through selection: always fp32 (``prismatic.models.pruning``), since bf16 ties
  change the kept set and a bf16 straight-through sum is not an exact one-hot;
* the heads always read fp32 (they are small, and their output is the action).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Precision:
    name: str  # "bf16" | "fp32" (resolved)
    device_type: str  # "cuda" | "cpu" | ...

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def frozen_dtype(self) -> torch.dtype:
        """Weights nothing updates: the LoRA base model, every weight at inference."""
        return torch.bfloat16 if self.bf16 else torch.float32

    trained_dtype = torch.float32  # weights the optimizer updates, and their optimizer state

    def model_dtype(self, use_lora: bool) -> torch.dtype:
        """The VLA's storage dtype for training: bf16 only when LoRA leaves it frozen."""
        return self.frozen_dtype if use_lora else self.trained_dtype

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 compute for the forward pass (a no-op in fp32)."""
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def __str__(self) -> str:
        return f"{self.name} on {self.device_type}"


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {name!r}")
    return name


def resolve_precision(name: str | None, device: str | torch.device) -> Precision:
    """``auto``/None -> bf16 on CUDA, fp32 elsewhere (upstream's choice); otherwise as asked, on any device."""
    device_type = torch.device(device).type
    name = check_precision(name or "auto")
    if name == "auto":
        name = "bf16" if device_type == "cuda" else "fp32"
    return Precision(name, device_type)


def fp32_island(device_type: str) -> contextlib.AbstractContextManager:
    """Code inside runs in fp32 even under an enclosing bf16 autocast (the pruner's scores and selection)."""
    if not torch.amp.is_autocast_available(device_type):  # e.g. "meta" (FLOP counting of the 7B layout)
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


def prepare_for_inference(vla: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """Cast a loaded VLA for inference under ``precision``: everything in its frozen dtype, except the vision backbone
    and projector, which compute the pruner's inputs in fp32 (upcasting a released checkpoint's bf16 weights is
    exact)."""
    vla.to(precision.frozen_dtype)
    vla.vision_backbone.float()
    vla.projector.float()
    return vla
