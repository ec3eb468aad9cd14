"""Hugging Face classes of the Prismatic / OpenVLA(-OFT) / LightVLA models."""

from __future__ import annotations


def register_auto_classes() -> None:
    """Let ``Auto*.from_pretrained(folder)`` find our classes for ``model_type: "openvla"`` (idempotent).

    transformers 5 removed ``AutoModelForVision2Seq``; the model registers with ``AutoModelForImageTextToText``.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    from prismatic.extern.hf.configuration_prismatic import OpenVLAConfig, PrismaticConfig
    from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
    from prismatic.extern.hf.processing_prismatic import PrismaticImageProcessor, PrismaticProcessor

    AutoConfig.register("prismatic", PrismaticConfig, exist_ok=True)
    AutoConfig.register("openvla", OpenVLAConfig, exist_ok=True)
    AutoImageProcessor.register(OpenVLAConfig, PrismaticImageProcessor, exist_ok=True)
    AutoProcessor.register(OpenVLAConfig, PrismaticProcessor, exist_ok=True)
    AutoModelForImageTextToText.register(OpenVLAConfig, OpenVLAForActionPrediction, exist_ok=True)
