"""Processor: released normalisation constants, shapes for one and two images, tokenizer conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PROMPT, random_image

from prismatic.extern.hf.configuration_prismatic import OpenVLAConfig
from prismatic.policy.presets import make_config

DINO_MEAN_BF16 = [0.484375, 0.455078125, 0.40625]
DINO_STD_BF16 = [0.228515625, 0.2236328125, 0.224609375]


def test_normalisation_constants_are_the_released_ones(processor):
    params = processor.image_processor.tvf_normalize_params
    assert params[0]["mean"] == DINO_MEAN_BF16 and params[0]["std"] == DINO_STD_BF16
    assert params[1]["mean"] == [0.5] * 3 and params[1]["std"] == [0.5] * 3
    resize = processor.image_processor.tvf_resize_params[0]
    assert resize["size"] == [224, 224] and resize["interpolation"] == 3 and resize["antialias"]


def test_constant_image_normalises_per_featurizer(processor):
    image = np.full((300, 200, 3), (51, 102, 204), np.uint8)
    pixels = processor.image_processor([image], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 6, 224, 224)
    rgb = torch.tensor([51, 102, 204]) / 255
    expected = torch.cat([(rgb - torch.tensor(DINO_MEAN_BF16)) / torch.tensor(DINO_STD_BF16), (rgb - 0.5) / 0.5])
    torch.testing.assert_close(pixels[0].mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)


def test_shapes_for_one_and_two_images_and_batches(processor):
    one = processor(PROMPT.format("pick up the soup"), random_image(0))
    assert one["pixel_values"].shape == (1, 6, 224, 224) and one["input_ids"].shape[0] == 1
    two = processor(PROMPT.format("pick up the soup"), [[random_image(0), random_image(1)]])
    assert two["pixel_values"].shape == (1, 12, 224, 224)
    torch.testing.assert_close(two["pixel_values"][:, :6], one["pixel_values"])  # image order kept
    batch = processor([PROMPT.format("a"), PROMPT.format("open the top drawer")], [random_image(0), random_image(1)])
    assert batch["pixel_values"].shape == (2, 6, 224, 224)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # right padding
    assert batch["attention_mask"][0, 0] == 1 and batch["attention_mask"][0, -1] == 0


def test_image_processor_saved_values_override_recomputed_ones(processor, tmp_path):
    from prismatic.extern.hf.processing_prismatic import PrismaticImageProcessor

    processor.image_processor.save_pretrained(tmp_path)
    loaded = PrismaticImageProcessor.from_pretrained(tmp_path)
    assert loaded.tvf_normalize_params == processor.image_processor.tvf_normalize_params


def test_tiny_tokenizer_follows_llama2_conventions(processor):
    tokenizer = processor.tokenizer
    config = make_config("tiny")
    ids = tokenizer(PROMPT.format("put the black bowl on the plate")).input_ids
    assert ids[0] == tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2 and ids[-1] != 2
    assert tokenizer.pad_token == "<PAD>" and tokenizer.pad_token_id == config.pad_token_id == tokenizer.vocab_size
    assert tokenizer.convert_ids_to_tokens(config.empty_token_id) == "▁"
    assert config.text_config.vocab_size == tokenizer.vocab_size + config.pad_to_multiple_of
    begin = tokenizer.vocab_size - (config.n_action_bins + 1)
    text = PROMPT.format("Pick up the BBQ sauce, 3 times! then place it in the basket")
    assert max(tokenizer(text).input_ids) <= begin  # ordinary text never yields action ids
    assert tokenizer.convert_ids_to_tokens(tokenizer("\n", add_special_tokens=False).input_ids) == ["▁", "<0x0A>"]


def test_processor_checks_prompt_and_image_counts(processor):
    with pytest.raises(ValueError, match="one prompt per sample"):
        processor([PROMPT.format("a"), PROMPT.format("b")], [random_image(0)])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="action_readout"):
        OpenVLAConfig(action_readout="middle")
    with pytest.raises(ValueError, match="pruner_noise"):
        OpenVLAConfig(pruner_noise="gaussian")
    with pytest.raises(ValueError, match="vision_backbone_id"):
        OpenVLAConfig(vision_backbone_id="resnet")


def test_released_preprocessor_config_loads_and_matches(processor, tmp_path):
    import json

    from prismatic.extern.hf.processing_prismatic import PrismaticImageProcessor

    released = {
        "auto_map": {
            "AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
            "AutoProcessor": "processing_prismatic.PrismaticProcessor",
        },
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, 224, 224], [3, 224, 224]],
        "interpolations": ["bicubic", "bicubic"],
        "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
        "processor_class": "PrismaticProcessor",
        "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
        "tvf_crop_params": [{"output_size": [224, 224]}, {"output_size": [224, 224]}],
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_normalize_params": [
            {"inplace": False, "mean": DINO_MEAN_BF16, "std": DINO_STD_BF16},
            {"inplace": False, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        ],
        "tvf_resize_params": [
            {"antialias": True, "interpolation": 3, "max_size": None, "size": [224, 224]},
            {"antialias": True, "interpolation": 3, "max_size": None, "size": [224, 224]},
        ],
        "use_fused_vision_backbone": True,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(released))
    loaded = PrismaticImageProcessor.from_pretrained(tmp_path)
    images = [random_image(3), random_image(4)]
    torch.testing.assert_close(
        loaded(images, return_tensors="pt")["pixel_values"],
        processor.image_processor(images, return_tensors="pt")["pixel_values"],
        rtol=0,
        atol=0,
    )
