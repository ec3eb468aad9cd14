"""The LIBERO HDF5 training dataset: chunks, statistics, normalisation, augmentation, batches and bad input."""

import json

import h5py
import numpy as np
import pytest
import torch
from conftest import write_task

from prismatic.policy.presets import make_config
from prismatic.vla.constants import IGNORE_INDEX, NormalizationType
from prismatic.vla.datasets import libero_hdf5
from prismatic.vla.datasets.datasets import (
    DatasetError,
    LiberoDataset,
    PaddedCollatorForActionPrediction,
    chunk_indices,
    standardize_gripper,
)
from prismatic.vla.image_pipeline import ImageAugmentation, center_crop
from prismatic.vla.normalization import normalize, unnormalize

NAME = "libero_object_no_noops"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setattr("prismatic.vla.datasets.statistics.CACHE_DIR", tmp_path / "cache")
    folder = tmp_path / NAME
    write_task(folder, "task_a", [12, 20])
    write_task(folder, "task_b", [9], first_seed=5, language="put it in the basket")
    return tmp_path


def make_dataset(root, processor, images=2, proprio=True, aug=False, name=NAME):
    return LiberoDataset(root, name, processor, make_config("tiny"), images, proprio, image_aug=aug)


def test_samples_are_steps_with_full_future_chunks(data_root, processor):
    ds = make_dataset(data_root, processor)
    assert [e.length for e in ds.episodes] == [12, 20, 9]
    assert len(ds) == (12 - 7) + (20 - 7) + (9 - 7)  # upstream drops the last 7 steps of every episode
    stats = ds.dataset_statistics[NAME]["action"]
    for index in (0, len(ds) - 1, 4, 5):
        episode, t = ds.locate(index)
        raw = unnormalize(ds[index]["actions"].numpy(), stats, NormalizationType.BOUNDS_Q99)
        seed = {0: 1, 1: 5}[episode.file_index] + int(episode.demo.removeprefix("demo_"))  # see write_task calls
        # dimension 0 holds seed * 1000 + step; normalisation clips it to [q01, q99]
        expected = np.clip(seed * 1000 + np.arange(t, t + 8), stats["q01"][0], stats["q99"][0])
        np.testing.assert_allclose(raw[:, 0], expected, rtol=1e-4, atol=1e-2)
    last_episode, last_t = ds.locate(len(ds) - 1)
    assert last_t + 8 == last_episode.length  # the last sample's chunk ends exactly at the episode's end


def test_chunk_indices_clamp_at_the_end():
    np.testing.assert_array_equal(chunk_indices(3, 6, 8), [3, 4, 5, 5, 5, 5, 5, 5])


def test_gripper_is_standardised_and_not_normalised(data_root, processor):
    ds = make_dataset(data_root, processor)
    np.testing.assert_array_equal(standardize_gripper(np.array([[0.0] * 6 + [-1.0], [0.0] * 6 + [1.0]]))[:, -1], [1, 0])
    gripper = torch.stack([ds[i]["actions"][:, -1] for i in range(len(ds))])
    assert set(gripper.unique().tolist()) == {0.0, 1.0}
    assert ds.dataset_statistics[NAME]["action"]["mask"] == [True] * 6 + [False]


def test_statistics_match_numpy_and_are_cached(data_root, processor):
    ds = make_dataset(data_root, processor)
    stats = ds.dataset_statistics[NAME]
    with h5py.File(data_root / NAME / "task_a_demo.hdf5") as f:
        a = [standardize_gripper(f[f"data/demo_{i}/actions"][()]) for i in (0, 1)]
        p = [libero_hdf5.read_proprio(f[f"data/demo_{i}/obs"]) for i in (0, 1)]
    with h5py.File(data_root / NAME / "task_b_demo.hdf5") as f:
        a.append(standardize_gripper(f["data/demo_0/actions"][()]))
        p.append(libero_hdf5.read_proprio(f["data/demo_0/obs"]))
    actions, proprio = np.concatenate(a), np.concatenate(p)
    assert stats["num_transitions"] == 41 and stats["num_trajectories"] == 3
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(actions, 0.01, axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["proprio"]["mean"], proprio.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["proprio"]["std"], proprio.std(0), rtol=1e-4)
    assert set(stats["action"]) == {"mean", "std", "max", "min", "q01", "q99", "mask"}

    cache = list((data_root / NAME).glob("dataset_statistics_*.json"))
    assert len(cache) == 1
    tampered = json.loads(cache[0].read_text())
    tampered["num_trajectories"] = 99
    cache[0].write_text(json.dumps(tampered))
    assert make_dataset(data_root, processor).dataset_statistics[NAME]["num_trajectories"] == 99  # read, not redone

    write_task(data_root / NAME, "task_c", [10], first_seed=9)  # new data: a new fingerprint, fresh statistics
    assert make_dataset(data_root, processor).dataset_statistics[NAME]["num_trajectories"] == 4


def test_normalise_unnormalise_round_trip(data_root, processor):
    stats = make_dataset(data_root, processor).dataset_statistics[NAME]["action"]
    low, high = np.array(stats["q01"]), np.array(stats["q99"])
    x = np.random.default_rng(0).uniform(low, high, (50, 7))
    x[:, -1] = np.round(x[:, -1])
    y = normalize(x, stats, NormalizationType.BOUNDS_Q99)
    assert np.all(np.abs(y[:, :6]) <= 1)
    np.testing.assert_allclose(unnormalize(y, stats, NormalizationType.BOUNDS_Q99), x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("images", [1, 2])
@pytest.mark.parametrize("proprio", [True, False])
def test_batches(data_root, processor, images, proprio):
    ds = make_dataset(data_root, processor, images=images, proprio=proprio, aug=True)
    config = make_config("tiny")
    collate = PaddedCollatorForActionPrediction(model_max_length=512, pad_token_id=config.pad_token_id)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate)
    batch = next(iter(loader))
    expected = {"pixel_values", "input_ids", "attention_mask", "labels", "actions", "dataset_names"}
    assert set(batch) == expected | ({"proprio"} if proprio else set())
    assert batch["pixel_values"].shape == (4, 6 * images, 224, 224)
    assert batch["actions"].shape == (4, 8, 7)
    if proprio:
        assert batch["proprio"].shape == (4, 8)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    # every row: 56 action slots then STOP, prompt ignored, padding on the right only
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        assert (labels[:n] > config.action_token_begin_idx).sum() == 56
        assert labels[n - 1] == 2 and (labels[n:] == IGNORE_INDEX).all()
        assert ids[0] == 1  # BOS


def test_samples_feed_the_model(data_root, processor):
    from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction

    ds = make_dataset(data_root, processor, images=2, proprio=False)
    config = make_config("tiny")
    batch = PaddedCollatorForActionPrediction(512, config.pad_token_id)([ds[0], ds[len(ds) - 1]])
    vla = OpenVLAForActionPrediction(config).train()
    out = vla(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        pixel_values=batch["pixel_values"],
        labels=batch["labels"],
    )
    assert out.action_hidden_states.shape[:2] == (2, 56)


def test_augmentation_crops_and_jitters_reproducibly():
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    aug = ImageAugmentation()
    a = aug(image, torch.Generator().manual_seed(1))
    b = aug(image, torch.Generator().manual_seed(1))
    c = aug(image, torch.Generator().manual_seed(2))
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1
    # with the colour operations neutral, the augmentation is a crop of 90% area at the sampled offset
    neutral = ImageAugmentation(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)
    gradient = np.tile(np.linspace(0, 255, 224, dtype=np.uint8)[None, :, None], (224, 1, 3))
    out = neutral(gradient, torch.Generator().manual_seed(0)).astype(int)
    # a 90%-area square spans ~94.9% of the width: the left-to-right ramp gets steeper by 1/0.949
    slope = (out[112, 200, 0] - out[112, 20, 0]) / 180
    assert 1.0 < slope < 1.2
    centred = center_crop(gradient).astype(int)
    assert abs(centred[112, 112, 0] - 127) <= 2


def test_hsv_round_trip_is_identity_when_neutral():
    from prismatic.vla.image_pipeline import _hsv_to_rgb, _rgb_to_hsv

    x = torch.rand(16, 16, 3)
    torch.testing.assert_close(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


# --- bad input -------------------------------------------------------------------------------------------------------
def test_missing_dataset_folder(tmp_path, processor):
    (tmp_path / "libero_goal_no_noops").mkdir()
    with pytest.raises(
        DatasetError, match=r"libero_object_no_noops.*not found.*libero_goal_no_noops.*generate_scripted"
    ):
        make_dataset(tmp_path, processor)


def test_empty_dataset_folder(tmp_path, processor):
    (tmp_path / NAME).mkdir()
    with pytest.raises(DatasetError, match="no .hdf5 files"):
        make_dataset(tmp_path, processor)


def test_file_without_the_expected_keys(tmp_path, processor):
    (tmp_path / NAME).mkdir()
    with h5py.File(tmp_path / NAME / "task_demo.hdf5", "w") as f:
        f.create_dataset("data/demo_0/actions", data=np.zeros((10, 7)))
    with pytest.raises(libero_hdf5.DemoFileError, match=r"lacks states, obs/agentview_rgb"):
        make_dataset(tmp_path, processor)


def test_corrupt_file(tmp_path, processor):
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "task_demo.hdf5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DatasetError, match="cannot be opened as HDF5"):
        make_dataset(tmp_path, processor)


def test_file_without_demos(tmp_path, processor):
    (tmp_path / NAME).mkdir()
    with h5py.File(tmp_path / NAME / "task_demo.hdf5", "w") as f:
        f.create_group("data")
    with pytest.raises(DatasetError, match="no demonstrations"):
        make_dataset(tmp_path, processor)


def test_mixture_reads_the_four_suites(tmp_path, processor, monkeypatch):
    monkeypatch.setattr("prismatic.vla.datasets.statistics.CACHE_DIR", tmp_path / "cache")
    for i, suite in enumerate(("spatial", "object", "goal", "10")):
        write_task(tmp_path / f"libero_{suite}_no_noops", f"task_{suite}", [10], first_seed=i + 1)
    ds = make_dataset(tmp_path, processor, name="libero_4_task_suites_no_noops")
    assert len(ds.files) == 4 and len(ds) == 4 * 3
    assert "libero_4_task_suites_no_noops" in ds.dataset_statistics
    joined = make_dataset(tmp_path, processor, name="libero_object_no_noops+libero_spatial_no_noops")
    assert len(joined.files) == 2 and len(joined) == 2 * 3
    assert set(joined.dataset_statistics) == {"libero_object_no_noops+libero_spatial_no_noops"}
    assert {e.language for e in joined.episodes} == {"pick up the thing"} and len(joined.episodes) == 2


def test_batched_samples_equal_single_ones(data_root, processor):
    """DataLoader fetches whole batches (__getitems__): the same samples as one at a time, augmentation included, and
    the same whether frames are kept in memory or read from disk every time."""
    cached = make_dataset(data_root, processor, aug=True)
    uncached = make_dataset(data_root, processor, aug=True)
    uncached._frames = None
    indices = [5, 0, 17, 5, 19]
    batch = cached.__getitems__(indices)
    for index, sample in zip(indices, batch):
        for other in (cached[index], uncached[index]):
            assert sample.keys() == other.keys()
            for key, value in sample.items():
                if isinstance(value, torch.Tensor):
                    torch.testing.assert_close(value, other[key], atol=1e-6, rtol=0)


def test_real_scripted_demos(scripted_demo_root, processor):
    """The dataset over files the simulator produced: images upright, proprio from the robot, 2 cameras."""
    ds = make_dataset(scripted_demo_root, processor, images=2, proprio=True, aug=False)
    sample = ds[0]
    assert sample["pixel_values"].shape == (12, 224, 224)
    assert torch.isfinite(sample["pixel_values"]).all() and sample["pixel_values"].std() > 0.1
    assert sample["proprio"].shape == (8,) and sample["proprio"].abs().max() <= 1
    assert ds.episodes[0].language == "pick up the alphabet soup and place it in the basket"


def test_augmentation_depends_on_seed_epoch_and_sample_only(data_root, processor):
    ds = make_dataset(data_root, processor, aug=True)
    first = ds[3]["pixel_values"]
    torch.testing.assert_close(ds[3]["pixel_values"], first)  # same epoch: same augmentation, whatever ran between
    assert not torch.equal(first[:6], first[6:])  # the two cameras get different draws
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["pixel_values"], first)
