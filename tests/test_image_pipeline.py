"""The image pipeline against upstream's TensorFlow pipeline, recorded on real LIBERO frames (and synthetic ones).

Fixture: tests/fixtures/upstream-image-pipeline (see its README): every stage of evaluation and training
preprocessing, computed by upstream's own functions under TensorFlow.
"""


import numpy as np
import pytest
import torch
from conftest import recorded

from prismatic.vla import image_pipeline as ip

FIXTURE = "upstream-image-pipeline"


@pytest.fixture(scope="module")
def eval_stages():
    return np.load(recorded(FIXTURE, "eval_pipeline.npz"))


@pytest.fixture(scope="module")
def train_stages():
    return np.load(recorded(FIXTURE, "train_pipeline.npz"))


def levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_frames_are_turned_as_upstream_turns_them(eval_stages):
    from experiments.robot.libero.libero_utils import CAMERA_KEYS, get_libero_image, get_libero_wrist_image

    inputs = np.load(recorded(FIXTURE, "inputs.npz"))
    for i, (raw, camera) in enumerate(zip(inputs["raw"], inputs["cameras"])):
        turn = get_libero_image if camera == "agentview" else get_libero_wrist_image
        np.testing.assert_array_equal(turn({CAMERA_KEYS[camera]: raw}), eval_stages["rotated"][i], f"image {i}")


def test_jpeg_bytes_and_decoding_equal_tensorflow(eval_stages):
    data, offsets = eval_stages["jpeg_bytes"], eval_stages["jpeg_offsets"]
    for i, rotated in enumerate(eval_stages["rotated"]):
        recorded = data[offsets[i] : offsets[i + 1]].tobytes()
        assert ip.encode_jpeg(rotated) == recorded, f"image {i}: encoder bytes differ"
        assert levels(ip.decode_jpeg(recorded), eval_stages["jpeg_roundtrip"][i]) == 0
        assert levels(ip.jpeg_roundtrip(rotated), eval_stages["jpeg_roundtrip"][i]) == 0


def test_lanczos3_resize_equals_tensorflow_bit_for_bit(eval_stages):
    for k, i in enumerate(eval_stages["float_index"]):  # the float output before rounding, for three images
        resized = ip.resize_float(eval_stages["jpeg_roundtrip"][i], 224).numpy()
        np.testing.assert_array_equal(resized, eval_stages["resized_f32"][k])
    for i, roundtrip in enumerate(eval_stages["jpeg_roundtrip"]):
        assert levels(ip.resize_lanczos3(roundtrip, 224), eval_stages["resized"][i]) == 0, f"image {i}"


def test_evaluation_frames_equal_tensorflow_at_every_stage(eval_stages):
    np.testing.assert_array_equal(ip.square_box(0.9, 0.5), eval_stages["crop_box"])
    for k, i in enumerate(eval_stages["float_index"]):
        crop = ip.crop_and_resize(ip.to_float(eval_stages["resized"][i]), ip.square_box(0.9, 0.5), 224).numpy()
        np.testing.assert_array_equal(crop, eval_stages["crop_f32"][k])
    for i, rotated in enumerate(eval_stages["rotated"]):
        assert levels(ip.resize_image_for_policy(rotated, 224), eval_stages["resized"][i]) == 0
        assert levels(ip.prepare_image(rotated, 224, use_center_crop=False), eval_stages["resized"][i]) == 0
        assert levels(ip.prepare_image(rotated, 224), eval_stages["final"][i]) == 0, f"image {i}"


def test_training_frames_equal_tensorflow(eval_stages, train_stages):
    for i, rotated in enumerate(eval_stages["rotated"]):  # RLDS frames are stored upright, as JPEGs of this image
        assert levels(ip.resize_image_for_policy(rotated, 224), train_stages["decoded_resized"][i]) == 0
    for name in ("fixed_A", "fixed_B"):
        params = train_stages[f"{name}_params"]
        for i, frame in enumerate(train_stages["decoded_resized"]):
            augmented = ip.ImageAugmentation.apply(frame[None], params[None, :4], *params[4:, None])[0]
            assert levels(augmented, train_stages[f"{name}_final"][i]) <= 1, f"{name} image {i}"
    # parameters upstream's own augment_image drew, all ten images in one batch
    params = train_stages["seeded_params"]
    batch = ip.ImageAugmentation.apply(train_stages["decoded_resized"], params[:, :4], *params[:, 4:].T)
    for i, augmented in enumerate(batch):
        assert levels(augmented, train_stages["seeded_final"][i]) <= 1, f"seeded image {i}"


def test_augmentation_stages_match_tensorflow_in_float(train_stages):
    """The crop is exact; the colour operations agree to float32 rounding."""
    params = train_stages["fixed_A_params"]
    for k, i in enumerate(train_stages["float_index"]):
        x = ip.crop_and_resize(ip.to_float(train_stages["decoded_resized"][i]), params[:4], 224).clamp(0, 1)
        np.testing.assert_array_equal(x.numpy(), train_stages["fixed_A_after_crop"][k])
        x = (x + np.float32(params[4])).clamp(0, 1)
        np.testing.assert_array_equal(x.numpy(), train_stages["fixed_A_after_brightness"][k])


def test_random_crop_slides_along_the_diagonal():
    """Upstream draws one offset for both axes. With the colour operations off, the crop's first pixel reads its own
    coordinates from an image whose red channel is the row and green channel the column."""
    size = 128
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.stack([rows * 2, cols * 2, np.zeros_like(rows)], -1).astype(np.uint8)
    crop_only = ip.ImageAugmentation(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)
    generator = torch.Generator().manual_seed(0)
    corners = np.array([crop_only(image, generator)[0, 0, :2].astype(int) for _ in range(40)])
    assert np.abs(corners[:, 0] - corners[:, 1]).max() <= 1  # row offset == column offset (up to rounding)
    margin = 2 * (size - 1) * (1 - np.sqrt(0.9))  # the free margin, in red/green levels
    assert corners[:, 0].min() < 0.2 * margin and corners[:, 0].max() > 0.8 * margin  # and it does move


def test_resize_at_the_same_size_is_the_identity():
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rounded = torch.round(ip.resize_float(image, 64)).clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(rounded, image)  # so resize_lanczos3 may skip it
    assert ip.resize_lanczos3(image, 64) is image
