"""Shared fixtures: the tiny preset (same architecture as 7B, CPU size) with fresh heads and fake statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.policy.presets import get_preset, make_config, make_heads, make_processor
from prismatic.vla.constants import PROMPT_TEMPLATE
from prismatic.vla.datasets import libero_hdf5

UNNORM_KEY = "libero_object_no_noops"
PROMPT = PROMPT_TEMPLATE
# Outputs recorded from the original upstream code (see tests/fixtures/README.md); part of the repository.
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def recorded(*parts: str) -> Path:
    """The path of a recorded upstream fixture, or an error saying which file is missing and why it matters."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"recorded upstream fixture {path.relative_to(FIXTURES.parent.parent)} is missing. It holds outputs of the "
            "original LightVLA/OpenVLA-OFT code that the equal-to-upstream tests compare against, and it cannot be "
            "recomputed here; restore it from the repository (git checkout -- tests/fixtures)."
        )
    return path


def fake_norm_stats(action_dim: int = 7, proprio_dim: int = 8) -> dict:
    rng = np.random.default_rng(0)
    low = rng.uniform(-2, -0.5, action_dim)
    high = rng.uniform(0.5, 2, action_dim)
    return {
        UNNORM_KEY: {
            "action": {"q01": low.tolist(), "q99": high.tolist(), "mask": [True] * (action_dim - 1) + [False]},
            "proprio": {"q01": [-1.0] * proprio_dim, "q99": [1.0] * proprio_dim},
        }
    }


@pytest.fixture(scope="session")
def processor():
    return make_processor("tiny")


def build_tiny_policy():
    """(vla in eval mode, action head, proprio projector) of the tiny preset, seeded, with fake statistics."""
    torch.manual_seed(0)
    config = make_config("tiny")
    vla = OpenVLAForActionPrediction(config).eval()
    vla.norm_stats = vla.config.norm_stats = fake_norm_stats()
    head, proprio = make_heads(config, get_preset("tiny").head_hidden_dim)
    return vla, head.eval(), proprio.eval()


@pytest.fixture
def tiny_policy():
    return build_tiny_policy()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, processor):
    """A saved tiny policy folder (random weights, statistics keyed UNNORM_KEY); treat it as read-only."""
    from prismatic.policy.checkpoints import save_policy

    vla, head, proprio = build_tiny_policy()
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-policy"
    save_policy(folder, vla, processor, head, proprio)
    return folder


def random_image(seed: int, size: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def scripted_demo_root(tmp_path_factory):
    """A real LIBERO dataset made by the scripted expert: libero_object task 0, 2 demos, 64 px cameras.

    Returns the data root; the dataset lives in `<root>/libero_object_no_noops`. Takes about a minute on 2 cores.
    """
    from experiments.robot.libero.generate_scripted_demos import GenerateDemosConfig, generate_task

    root = tmp_path_factory.mktemp("demos")
    cfg = GenerateDemosConfig(
        task_suite_name="libero_object", num_demos_per_task=2, out_dir=root / UNNORM_KEY, resolution=64
    )
    report = generate_task(cfg, 0, show_progress=False)
    assert report.successes == 2, report
    return root


def synthetic_demo(length: int, seed: int, size: int = 32) -> libero_hdf5.Demo:
    """Actions encode (demo seed, step) so tests can tell exactly which steps a chunk holds."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (length, 7))
    actions[:, 0] = seed * 1000 + np.arange(length)
    actions[:, -1] = np.where(np.arange(length) < length // 2, -1.0, 1.0)  # open, then close
    images = {key: rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8) for key in libero_hdf5.IMAGE_KEYS}
    return libero_hdf5.Demo(
        actions=actions,
        states=rng.normal(size=(length, 20)),
        robot_states=rng.normal(size=(length, 9)),
        ee_pos=rng.normal(size=(length, 3)),
        ee_ori=rng.normal(size=(length, 3)),
        gripper_states=rng.uniform(-0.04, 0.04, (length, 2)),
        joint_states=rng.normal(size=(length, 7)),
        images=images,
    )


def write_task(folder, name, lengths, first_seed=1, language="pick up the thing"):
    demos = [synthetic_demo(n, first_seed + i) for i, n in enumerate(lengths)]
    libero_hdf5.write_demo_file(folder / libero_hdf5.task_file_name(name), demos, language, {}, "x.bddl")
    return demos


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """Three synthetic demos of two tasks, as a training dataset named UNNORM_KEY; returns the data root."""
    monkeypatch.setattr("prismatic.vla.datasets.statistics.CACHE_DIR", tmp_path / "cache")
    write_task(tmp_path / "data" / UNNORM_KEY, "task_a", [20, 24], language="pick up the soup")
    write_task(tmp_path / "data" / UNNORM_KEY, "task_b", [22], first_seed=7, language="pick up the milk")
    return tmp_path / "data"


def finetune_config(data_root, tmp_path, **overrides):
    """A short tiny-preset fine-tuning run on `data_root` (6 steps, batch 4, LoRA rank 4, checkpoints every 3)."""
    from prismatic.training.config import FinetuneConfig

    values = dict(
        vla_path="tiny", data_root_dir=data_root, dataset_name=UNNORM_KEY, run_root_dir=tmp_path / "runs",
        num_images_in_input=2, use_proprio=True, batch_size=4, max_steps=6, save_freq=3, lora_rank=4,
        num_workers=0, log_freq=1000, kept_tokens_log_freq=3, learning_rate=1e-3, generate_demos_if_missing=False,
    )  # fmt: skip
    values.update(overrides)
    return FinetuneConfig(**values)
