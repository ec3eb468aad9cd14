"""Named model presets: pick one by name, override a field or two.

* ``tiny``: the OpenVLA-OFT / LightVLA architecture (fused DINOv2 + SigLIP featurizers at 224 px with 16x16 patches
  per image, 3-layer projector, Llama decoder, L1 head, proprio projector) at CPU size, with an offline tokenizer.
  Built from scratch: it has no pretrained weights.
* ``small``: the same at a size where, as at 7B, the LLM dominates the compute; for CPU latency benchmarks.
* ``openvla-7b-oft``: the released 7B configuration (OpenVLA-OFT and LightVLA checkpoints share it key for key).
  Its tokenizer and weights come from a checkpoint folder (see ``prismatic.policy.checkpoints``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prismatic.extern.hf.configuration_prismatic import OpenVLAConfig
from prismatic.models.action_heads import L1RegressionActionHead
from prismatic.models.projectors import ProprioProjector


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: dict[str, Any]
    offline_tokenizer: bool  # True: the tokenizer is built here; False: it comes from the checkpoint
    head_hidden_dim: int | None = None  # None: the LLM width, as upstream


_RELEASED_7B = {
    "vision_backbone_id": "dinosiglip-vit-so-224px",
    "llm_backbone_id": "llama2-7b-pure",
    "arch_specifier": "no-align+fused-gelu-mlp",
    "use_fused_vision_backbone": True,
    "image_resize_strategy": "resize-naive",
    "llm_max_length": 2048,
    "pad_token_id": 32000,
    "pad_to_multiple_of": 64,
    "n_action_bins": 256,
    "text_config": {"model_type": "llama", "pad_token_id": 32000, "vocab_size": 32064},
    "architectures": ["OpenVLAForActionPrediction"],
}

_TINY = {
    **_RELEASED_7B,
    "llm_backbone_id": "llama2-tiny",
    "timm_model_overrides": [
        {"embed_dim": 64, "depth": 3, "num_heads": 2},  # DINOv2-style: 4 registers, LayerScale
        {"embed_dim": 64, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0},  # SigLIP-style: no CLS, MAP head
    ],
    "pad_token_id": 960,
    "text_config": {
        "model_type": "llama",
        "vocab_size": 1024,
        "pad_token_id": 960,
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
    },
    "num_images_in_input": 2,
}

# CPU benchmarking size: the LLM does ~92% of the FLOPs (7B: ~90%), so pruning's effect is representative.
_SMALL = {
    **_TINY,
    "llm_backbone_id": "llama2-small",
    "timm_model_overrides": [
        {"embed_dim": 192, "depth": 4, "num_heads": 3},
        {"embed_dim": 192, "depth": 4, "num_heads": 3, "mlp_ratio": 2.0},
    ],
    "text_config": {
        **_TINY["text_config"],
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 8,
        "num_attention_heads": 12,
    },
}

# The embedded default that learns a LIBERO task on 2 CPU cores: 128 px images (LIBERO renders of that size pass
# through unresized) in 16 px patches, i.e. 8 x 8 = 64 visual tokens per image, 128 in all; ViTs and LLM 64 wide.
_LIBERO_CPU = {
    **_TINY,
    "llm_backbone_id": "llama2-libero-cpu",
    "image_sizes": [128, 128],
    "timm_model_overrides": [
        {"embed_dim": 64, "depth": 3, "num_heads": 2, "patch_size": 16},
        {"embed_dim": 64, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 16},
    ],
    "text_config": {
        **_TINY["text_config"],
        "hidden_size": 64,
        "intermediate_size": 172,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
    },
}

PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", "same architecture at CPU size, from scratch, offline tokenizer", _TINY, True, 256),
    "libero-cpu": Preset(
        "libero-cpu", "the embedded default: learns a LIBERO task on a 2-core CPU (128 px, 128 visual tokens)",
        _LIBERO_CPU, True, 256,
    ),
    "small": Preset(
        "small", "LLM-dominated CPU benchmark size (~64 M parameters), offline tokenizer", _SMALL, True, 512
    ),
    "openvla-7b-oft": Preset("openvla-7b-oft", "released OpenVLA-OFT / LightVLA 7B layout", _RELEASED_7B, False),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def make_config(name: str, **overrides: Any) -> OpenVLAConfig:
    preset = get_preset(name)
    if preset.offline_tokenizer:
        from prismatic.policy.tiny_tokenizer import tiny_empty_token_id

        overrides.setdefault("empty_token_id", tiny_empty_token_id())
    return OpenVLAConfig(**{**preset.config, **overrides})


def make_processor(name: str):
    """The preset's processor; only presets with an offline tokenizer can build one without a checkpoint."""
    from prismatic.extern.hf.processing_prismatic import PrismaticImageProcessor, PrismaticProcessor
    from prismatic.policy.tiny_tokenizer import build_tiny_tokenizer

    preset = get_preset(name)
    if not preset.offline_tokenizer:
        raise ValueError(
            f"preset {name!r} uses its checkpoint's Llama-2 tokenizer: load the processor with "
            "PrismaticProcessor.from_pretrained(<checkpoint folder>)"
        )
    config = make_config(name)
    image_processor = PrismaticImageProcessor(
        use_fused_vision_backbone=config.use_fused_vision_backbone,
        image_resize_strategy=config.image_resize_strategy,
        input_sizes=[[3, s, s] for s in config.image_sizes],
        interpolations=["bicubic"] * len(config.image_sizes),
        means=[[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]][: len(config.image_sizes)],
        stds=[[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]][: len(config.image_sizes)],
    )
    return PrismaticProcessor(image_processor, build_tiny_tokenizer())


def make_heads(config: OpenVLAConfig, head_hidden_dim: int | None = None, use_proprio: bool = True):
    """Fresh (L1 action head, proprio projector or None) sized for ``config``."""
    llm_dim = config.text_config.hidden_size
    space = config.get_action_space()
    head = L1RegressionActionHead(llm_dim, head_hidden_dim or llm_dim, space.action_dim, space.num_actions_chunk)
    proprio = ProprioProjector(llm_dim, space.proprio_dim) if use_proprio else None
    return head, proprio


def make_policy(name: str, norm_stats: dict[str, Any] | None = None, use_proprio: bool = True, seed: int = 0):
    """A freshly initialised policy (model in eval mode, heads, processor) of an offline preset, e.g. ``tiny``."""
    import torch

    from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
    from prismatic.policy.checkpoints import Policy

    torch.manual_seed(seed)
    processor = make_processor(name)
    config = make_config(name, norm_stats=norm_stats)
    vla = OpenVLAForActionPrediction(config).eval()
    head, proprio = make_heads(config, get_preset(name).head_hidden_dim, use_proprio)
    return Policy(vla, processor, head.eval(), proprio.eval() if proprio is not None else None, folder=None)
