"""prismatic.policy.inference: observation dicts -> un-normalised action chunks (the path eval and the server use)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import UNNORM_KEY, fake_norm_stats, random_image

from prismatic.policy.inference import predict_action_chunk
from prismatic.policy.presets import make_policy
from prismatic.vla.image_pipeline import center_crop, resize_image_for_policy
from prismatic.vla.normalization import normalize

TASKS = ["pick up the soup", "put the bowl on the plate"]


@pytest.fixture(scope="module")
def policy():
    return make_policy("tiny", norm_stats=fake_norm_stats())


def observation(seed):
    return {"full_image": random_image(seed), "wrist_image": random_image(seed + 50), "state": np.full(8, 0.1 * seed)}


def test_batch_equals_single_and_matches_predict_action(policy):
    batched, stats = predict_action_chunk(policy, [observation(1), observation(2)], TASKS, UNNORM_KEY)
    assert batched.shape == (2, 8, 7) and stats.kept_counts.shape == (2,)
    single, _ = predict_action_chunk(policy, [observation(2)], TASKS[1:], UNNORM_KEY)
    np.testing.assert_allclose(batched[1], single[0], atol=1e-5)

    # Same thing by hand: upstream's resize (JPEG + lanczos3 to 224), center crop, processor, proprio, predict_action.
    obs = observation(2)
    images = [[center_crop(resize_image_for_policy(obs[k], 224)) for k in ("full_image", "wrist_image")]]
    inputs = policy.processor([f"In: What action should the robot take to {TASKS[1]}?\nOut:"], images)
    proprio = normalize(
        obs["state"], policy.vla.norm_stats[UNNORM_KEY]["proprio"], policy.vla.action_space.normalization_type
    )
    by_hand, _ = policy.vla.predict_action(
        **inputs, unnorm_key=UNNORM_KEY, proprio=proprio, proprio_projector=policy.proprio_projector,
        action_head=policy.action_head,
    )  # fmt: skip
    np.testing.assert_allclose(single[0], by_hand, atol=1e-6)


def test_center_crop_keeps_size_and_zooms_in():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:2] = 255  # the 95x95 center crop drops the top 2 rows, so this band disappears
    cropped = center_crop(image)
    assert cropped.shape == (100, 100, 3) and cropped.max() == 0


@pytest.mark.parametrize(
    "obs,message",
    [
        ({"wrist_image": random_image(0), "state": np.zeros(8)}, "full_image"),
        ({"full_image": random_image(0), "state": np.zeros(8)}, "takes 2 image"),
        ({"full_image": random_image(0), "wrist_image": random_image(1)}, "'state'"),
    ],
)
def test_bad_observations(policy, obs, message):
    with pytest.raises(ValueError, match=message):
        predict_action_chunk(policy, [obs], TASKS[:1], UNNORM_KEY)


def test_observation_and_task_counts_must_match(policy):
    with pytest.raises(ValueError, match="2 observations but 1 task"):
        predict_action_chunk(policy, [observation(1), observation(2)], TASKS[:1], UNNORM_KEY)
