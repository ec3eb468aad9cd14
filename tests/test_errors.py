"""Bad input fails early with a message that names the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PROMPT, UNNORM_KEY, random_image

from prismatic.policy.checkpoints import CheckpointError, load_policy, resolve_checkpoint, save_policy


def inputs_for(processor, images):
    return processor(PROMPT.format("pick up the soup"), [images])


def run(vla, head, proprio_projector, inputs, proprio=np.zeros(8, np.float32), unnorm_key=UNNORM_KEY):
    return vla.predict_action(
        **inputs, unnorm_key=unnorm_key, proprio=proprio, proprio_projector=proprio_projector, action_head=head
    )


def test_wrong_image_size(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    inputs = inputs_for(processor, [random_image(0), random_image(1)])
    inputs["pixel_values"] = torch.nn.functional.interpolate(inputs["pixel_values"], size=(200, 200))
    with pytest.raises(ValueError, match=r"224x224 with PrismaticProcessor"):
        run(vla, head, proprio_projector, inputs)


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((64, 64, 4), np.uint8), r"RGB image of shape \(H, W, 3\)"),
        (np.zeros((64, 64), np.uint8), r"RGB image of shape \(H, W, 3\)"),
        (np.zeros((64, 64, 3), np.float32), "uint8"),
    ],
)
def test_wrong_image_channels_or_dtype(processor, image, message):
    with pytest.raises(ValueError, match=message):
        processor(PROMPT.format("pick up the soup"), image)


def test_num_images_mismatch(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    with pytest.raises(ValueError, match=r"set_num_images_in_input\(1\)"):
        run(vla, head, proprio_projector, inputs_for(processor, [random_image(0)]))
    vla.set_num_images_in_input(1)
    actions, _ = run(vla, head, proprio_projector, inputs_for(processor, [random_image(0)]))
    assert actions.shape == (8, 7) and vla.get_num_patches() == 256


def test_wrong_proprio_length(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    with pytest.raises(ValueError, match="proprio projector expects 8"):
        run(vla, head, proprio_projector, inputs_for(processor, [random_image(0), random_image(1)]), np.zeros(7))


def test_unknown_unnorm_key(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    with pytest.raises(ValueError, match=r"Unknown unnorm_key 'bridge_orig'.*libero_object_no_noops"):
        run(
            vla,
            head,
            proprio_projector,
            inputs_for(processor, [random_image(0), random_image(1)]),
            unnorm_key="bridge_orig",
        )


def test_missing_statistics(processor, tiny_policy):
    vla, head, proprio_projector = tiny_policy
    vla.norm_stats = None
    with pytest.raises(ValueError, match="dataset_statistics.json"):
        run(vla, head, proprio_projector, inputs_for(processor, [random_image(0), random_image(1)]))


def test_missing_action_head(processor, tiny_policy):
    vla, _, proprio_projector = tiny_policy
    with pytest.raises(ValueError, match="action_head"):
        run(vla, None, proprio_projector, inputs_for(processor, [random_image(0), random_image(1)]))


def test_missing_folder_and_unreachable_hub(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on machines without the Hub: the error must say so
    with pytest.raises(CheckpointError, match="Hugging Face Hub"):
        resolve_checkpoint("someone/openvla-7b-oft-finetuned-libero-spatial")


def test_checkpoint_without_head_or_with_corrupt_files(processor, tiny_policy, tmp_path):
    vla, head, proprio_projector = tiny_policy
    folder = save_policy(tmp_path / "ckpt", vla, processor, head, proprio_projector, "3_checkpoint.pt")
    (folder / "proprio_projector--3_checkpoint.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_policy(folder)
    (folder / "action_head--3_checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match="no action_head"):
        load_policy(folder)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_policy(tmp_path)


def test_several_head_checkpoints_are_ambiguous(processor, tiny_policy, tmp_path):
    vla, head, proprio_projector = tiny_policy
    folder = save_policy(tmp_path / "ckpt", vla, processor, head, proprio_projector, "3_checkpoint.pt")
    torch.save(head.state_dict(), folder / "action_head--4_checkpoint.pt")
    with pytest.raises(CheckpointError, match="several action_head"):
        load_policy(folder)
