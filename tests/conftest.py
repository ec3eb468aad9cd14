"""Shared fixtures: the tiny preset (same architecture as 7B, CPU size) with fresh heads and fake statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.presets import get_preset, make_config, make_heads, make_processor
from prismatic.vla.constants import PROMPT_TEMPLATE

UNNORM_KEY = "libero_object_no_noops"
PROMPT = PROMPT_TEMPLATE


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


@pytest.fixture
def tiny_policy():
    """(vla in eval mode, action head, proprio projector), seeded."""
    torch.manual_seed(0)
    config = make_config("tiny")
    vla = OpenVLAForActionPrediction(config).eval()
    vla.norm_stats = vla.config.norm_stats = fake_norm_stats()
    head, proprio = make_heads(config, get_preset("tiny").head_hidden_dim)
    return vla, head.eval(), proprio.eval()


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
