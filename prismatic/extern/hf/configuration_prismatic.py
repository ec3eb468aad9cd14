"""Configuration classes of the Prismatic / OpenVLA(-OFT) / LightVLA models.

Reads and writes the ``config.json`` of the released checkpoints unchanged (same keys, same lookup tables). Keys that
upstream leaves implicit are added with defaults that reproduce the released models: the LIBERO action space, one
input image, pruning on, the training-aligned action read-out. Nothing here is read from globals or the command line.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig
from transformers.models.auto import CONFIG_MAPPING

from prismatic.models.pruning import EVAL_DUPLICATES, NOISE_DISTRIBUTIONS, TRAIN_DUPLICATES
from prismatic.vla.constants import LLAMA2_EMPTY_TOKEN_ID, ActionSpace

# === Lookup tables of the released checkpoints ===
VISION_BACKBONE_TO_RESOLUTION: dict[str, list[int]] = {
    "clip-vit-l": [224], "siglip-vit-so400m": [224], "dinov2-vit-l": [224], "in1k-vit-l": [224],
    "clip-vit-l-336px": [336], "siglip-vit-so400m-384px": [384],
    "dinoclip-vit-l-336px": [336, 336], "dinosiglip-vit-so-224px": [224, 224], "dinosiglip-vit-so-384px": [384, 384],
}  # fmt: skip
VISION_BACKBONE_TO_TIMM_ID: dict[str, list[str]] = {
    "clip-vit-l": ["vit_large_patch14_clip_224.openai"],
    "clip-vit-l-336px": ["vit_large_patch14_clip_336.openai"],
    "dinov2-vit-l": ["vit_large_patch14_reg4_dinov2.lvd142m"],
    "in1k-vit-l": ["vit_large_patch16_224.augreg_in21k_ft_in1k"],
    "siglip-vit-so400m": ["vit_so400m_patch14_siglip_224"],
    "siglip-vit-so400m-384px": ["vit_so400m_patch14_siglip_384"],
    "dinoclip-vit-l-336px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_large_patch14_clip_336.openai"],
    "dinosiglip-vit-so-224px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "dinosiglip-vit-so-384px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_384"],
}
TIMM_OVERRIDE_ACT_LAYER: dict[str, list[str | None]] = {
    "clip-vit-l": ["quick_gelu"], "clip-vit-l-336px": ["quick_gelu"],
    "dinov2-vit-l": [None], "in1k-vit-l": [None],
    "siglip-vit-so400m": [None], "siglip-vit-so400m-384px": [None],
    "dinoclip-vit-l-336px": [None, "quick_gelu"],
    "dinosiglip-vit-so-224px": [None, None], "dinosiglip-vit-so-384px": [None, None],
}  # fmt: skip
LLM_BACKBONE_TO_HF_PATH: dict[str, str | None] = {
    "llama2-7b-pure": "meta-llama/Llama-2-7b-hf", "llama3-8b-pure": "meta-llama/Meta-Llama-3-8B",
    "llama2-7b-chat": "meta-llama/Llama-2-7b-chat-hf", "vicuna-v15-7b": "lmsys/vicuna-7b-v1.5",
    "llama2-tiny": None, "llama2-small": None, "llama2-libero-cpu": None,  # CPU presets: no pretrained weights
}  # fmt: skip
LLM_BACKBONE_TO_HF_METACLASS: dict[str, str] = {
    "llama2-7b-pure": "llama", "llama3-8b-pure": "llama", "llama2-7b-chat": "llama", "vicuna-v15-7b": "llama",
    "llama2-tiny": "llama", "llama2-small": "llama", "llama2-libero-cpu": "llama",
}  # fmt: skip

# transformers-4.40.1 LlamaConfig defaults: the released `text_config` stores only a handful of keys and the rest were
# filled by the 4.40.1 defaults at training time, so they are pinned here rather than left to whatever release is
# installed (e.g. rms_norm_eps is 1e-6 here, not Meta's 1e-5).
LLAMA_4_40_DEFAULTS: dict[str, Any] = {
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": None, "hidden_act": "silu", "max_position_embeddings": 2048, "initializer_range": 0.02,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False,
    "attention_dropout": 0.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip

ACTION_READOUT_CHOICES = ("oft_aligned", "lightvla_tail")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _llama_text_config(text_config: dict[str, Any] | None, pad_token_id: int) -> PretrainedConfig:
    values = dict(LLAMA_4_40_DEFAULTS)
    values.update({"pad_token_id": pad_token_id})
    values.update(text_config or {})
    if values.get("num_key_value_heads") is None:
        values["num_key_value_heads"] = values["num_attention_heads"]
    if "rope_parameters" not in values:  # transformers 5 keeps theta and scaling together
        scaling = values.pop("rope_scaling", None) or {"rope_type": "default"}
        values["rope_parameters"] = {**scaling, "rope_theta": values.pop("rope_theta", 10000.0)}
    return CONFIG_MAPPING["llama"](**values)


class PrismaticConfig(PretrainedConfig):
    model_type: str = "prismatic"
    is_composition: bool = False

    def __init__(
        self,
        vision_backbone_id: str = "siglip-vit-so400m",
        llm_backbone_id: str = "vicuna-v15-7b",
        arch_specifier: str = "no-align+gelu-mlp",
        use_fused_vision_backbone: bool | None = None,
        image_resize_strategy: str = "letterbox",
        text_config: dict[str, Any] | None = None,
        llm_max_length: int = 2048,
        pad_token_id: int = 32000,
        pad_to_multiple_of: int = 64,
        output_projector_states: bool = False,
        timm_model_overrides: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        if vision_backbone_id not in VISION_BACKBONE_TO_TIMM_ID:
            raise ValueError(
                f"Unknown vision_backbone_id {vision_backbone_id!r}; known: {sorted(VISION_BACKBONE_TO_TIMM_ID)}"
            )
        if llm_backbone_id not in LLM_BACKBONE_TO_HF_PATH:
            raise ValueError(f"Unknown llm_backbone_id {llm_backbone_id!r}; known: {sorted(LLM_BACKBONE_TO_HF_PATH)}")

        self.vision_backbone_id = vision_backbone_id
        self.llm_backbone_id = llm_backbone_id
        self.arch_specifier = arch_specifier
        self.output_projector_states = output_projector_states
        self.use_fused_vision_backbone = (
            use_fused_vision_backbone
            if use_fused_vision_backbone is not None
            else any(vision_backbone_id.startswith(p) for p in ("dinoclip", "dinosiglip"))
        )
        self.timm_model_ids = VISION_BACKBONE_TO_TIMM_ID[vision_backbone_id]
        self.timm_override_act_layers = TIMM_OVERRIDE_ACT_LAYER[vision_backbone_id]
        # Extra timm constructor kwargs per featurizer (e.g. embed_dim/depth): how small presets keep the architecture.
        self.timm_model_overrides = timm_model_overrides
        # Released configs store the lookup's value; small presets may set another resolution for the same backbones.
        self.image_sizes = list(kwargs.pop("image_sizes", None) or VISION_BACKBONE_TO_RESOLUTION[vision_backbone_id])
        self.image_resize_strategy = image_resize_strategy
        self.hf_llm_id = LLM_BACKBONE_TO_HF_PATH[llm_backbone_id]
        self.llm_max_length = llm_max_length
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

        if isinstance(text_config, PretrainedConfig):
            text_config = text_config.to_dict()
        self.text_config = _llama_text_config(text_config, pad_token_id)
        for derived in ("hf_llm_id", "timm_model_ids", "timm_override_act_layers"):
            kwargs.pop(derived, None)  # stored in config.json but always recomputed from the backbone ids
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        text = self.text_config.to_dict() if isinstance(self.text_config, PretrainedConfig) else dict(self.text_config)
        out["text_config"] = text
        return out


class OpenVLAConfig(PrismaticConfig):
    """OpenVLA-OFT / LightVLA policy configuration.

    Beyond the released keys it records what upstream hard-codes or reads from ``sys.argv``:
    ``action_space`` (chunk length, action / proprio dims, normalisation), ``num_images_in_input``,
    the pruner switches and the action read-out position (see ``prismatic/models/pruning.py``).
    """

    model_type: str = "openvla"

    def __init__(
        self,
        norm_stats: dict[str, dict[str, dict[str, Any]]] | None = None,
        n_action_bins: int = 256,
        action_space: dict[str, Any] | None = None,
        num_images_in_input: int = 1,
        prune_visual_tokens: bool = True,
        pruner_noise: str = "uniform",
        pruner_train_duplicates: str = "keep",
        pruner_eval_duplicates: str = "once",
        action_readout: str = "oft_aligned",
        empty_token_id: int = LLAMA2_EMPTY_TOKEN_ID,
        **kwargs: Any,
    ) -> None:
        self.norm_stats = norm_stats
        self.n_action_bins = n_action_bins
        self.action_space = ActionSpace(**(action_space or {})).to_dict()
        if num_images_in_input < 1:
            raise ValueError(f"num_images_in_input must be >= 1, got {num_images_in_input}")
        check_choice("pruner_noise", pruner_noise, NOISE_DISTRIBUTIONS)
        check_choice("pruner_train_duplicates", pruner_train_duplicates, TRAIN_DUPLICATES)
        check_choice("pruner_eval_duplicates", pruner_eval_duplicates, EVAL_DUPLICATES)
        check_choice("action_readout", action_readout, ACTION_READOUT_CHOICES)
        self.num_images_in_input = num_images_in_input
        self.prune_visual_tokens = prune_visual_tokens
        self.pruner_noise = pruner_noise
        self.pruner_train_duplicates = pruner_train_duplicates
        self.pruner_eval_duplicates = pruner_eval_duplicates
        self.action_readout = action_readout
        self.empty_token_id = empty_token_id
        super().__init__(**kwargs)

    def get_action_space(self) -> ActionSpace:
        return ActionSpace(**self.action_space)

    @property
    def action_token_begin_idx(self) -> int:
        """Ids above this are action tokens: the last ``n_action_bins`` of the text vocabulary, before ``<PAD>``."""
        return self.text_config.vocab_size - self.pad_to_multiple_of - (self.n_action_bins + 1)
