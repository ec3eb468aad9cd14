"""The released 7B layout, built on the meta device (no memory): keys, shapes, parameter count, config keys."""

from __future__ import annotations

import json

import pytest
import torch

from prismatic.extern.hf.configuration_prismatic import OpenVLAConfig
from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.models.action_heads import L1RegressionActionHead
from prismatic.models.projectors import ProprioProjector
from prismatic.policy.presets import make_config

# config.json of the released OpenVLA-OFT / LightVLA checkpoints (norm_stats shortened)
RELEASED_CONFIG = {
    "architectures": ["OpenVLAForActionPrediction"],
    "auto_map": {
        "AutoConfig": "configuration_prismatic.OpenVLAConfig",
        "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
    },
    "arch_specifier": "no-align+fused-gelu-mlp",
    "hf_llm_id": "meta-llama/Llama-2-7b-hf",
    "image_resize_strategy": "resize-naive",
    "image_sizes": [224, 224],
    "llm_backbone_id": "llama2-7b-pure",
    "llm_max_length": 2048,
    "model_type": "openvla",
    "n_action_bins": 256,
    "norm_stats": {"libero_spatial_no_noops": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7}}},
    "output_projector_states": False,
    "pad_to_multiple_of": 64,
    "pad_token_id": 32000,
    "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "timm_override_act_layers": [None, None],
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.1",
    "use_fused_vision_backbone": True,
    "vision_backbone_id": "dinosiglip-vit-so-224px",
}

EXPECTED_SHAPES = {
    "vision_backbone.featurizer.cls_token": (1, 1, 1024),
    "vision_backbone.featurizer.reg_token": (1, 4, 1024),
    "vision_backbone.featurizer.pos_embed": (1, 256, 1024),
    "vision_backbone.featurizer.patch_embed.proj.weight": (1024, 3, 14, 14),
    "vision_backbone.featurizer.blocks.23.ls2.scale_factor": (1024,),
    "vision_backbone.fused_featurizer.pos_embed": (1, 256, 1152),
    "vision_backbone.fused_featurizer.blocks.26.mlp.fc1.weight": (4304, 1152),
    "vision_backbone.fused_featurizer.attn_pool.latent": (1, 1, 1152),
    "projector.fc1.weight": (8704, 2176),
    "projector.fc2.weight": (4096, 8704),
    "projector.fc3.weight": (4096, 4096),
    "language_model.model.embed_tokens.weight": (32064, 4096),
    "language_model.model.layers.31.self_attn.q_proj.weight": (4096, 4096),
    "language_model.model.layers.31.mlp.gate_proj.weight": (11008, 4096),
    "language_model.model.norm.weight": (4096,),
    "language_model.lm_head.weight": (32064, 4096),
}


@pytest.fixture(scope="module")
def released_model():
    with torch.device("meta"):
        return OpenVLAForActionPrediction(OpenVLAConfig(**RELEASED_CONFIG))


def test_parameter_count_and_keys(released_model):
    state = released_model.state_dict()
    assert sum(p.numel() for p in released_model.parameters()) == 7_541_237_184
    assert len(state) == 982
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("gamma" in k or "pruner" in k for k in state)
    assert sum("ls1.scale_factor" in k for k in state) == 24  # DINOv2 only; SigLIP has no LayerScale
    assert sum(k.startswith("language_model.model.layers.") and k.endswith("q_proj.weight") for k in state) == 32
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"vision_backbone", "projector", "language_model"}


def test_text_config_gets_transformers_4_40_defaults():
    text = OpenVLAConfig(**RELEASED_CONFIG).text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (4096, 32, 32)
    assert text.rms_norm_eps == 1e-6 and text.max_position_embeddings == 2048
    assert text.rope_parameters["rope_theta"] == 10000.0 and not text.tie_word_embeddings


def test_released_config_keys_survive_a_round_trip(tmp_path):
    config = OpenVLAConfig(**RELEASED_CONFIG)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in set(RELEASED_CONFIG) - {"torch_dtype", "transformers_version", "auto_map"}:
        assert saved[key] == RELEASED_CONFIG[key] or key == "text_config", key
    assert saved["text_config"]["vocab_size"] == 32064
    assert OpenVLAConfig.from_pretrained(tmp_path).get_action_space().num_actions_chunk == 8


def test_preset_matches_released_layout(released_model):
    with torch.device("meta"):
        preset = OpenVLAForActionPrediction(make_config("openvla-7b-oft"))
    assert {k: v.shape for k, v in preset.state_dict().items()} == {
        k: v.shape for k, v in released_model.state_dict().items()
    }


def test_released_head_shapes():
    with torch.device("meta"):
        head = L1RegressionActionHead(4096, 4096, 7, 8)
        proprio = ProprioProjector(4096, 8)
    assert tuple(head.state_dict()["model.fc1.weight"].shape) == (4096, 28672)
    assert sorted(k for k in head.state_dict() if "mlp_resnet_blocks.1" in k) == [
        "model.mlp_resnet_blocks.1.ffn.0.bias", "model.mlp_resnet_blocks.1.ffn.0.weight",
        "model.mlp_resnet_blocks.1.ffn.1.bias", "model.mlp_resnet_blocks.1.ffn.1.weight",
    ]  # fmt: skip
    assert abs(sum(p.numel() for p in head.parameters()) - 151e6) < 1e6
    assert sorted(proprio.state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
