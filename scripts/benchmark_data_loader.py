"""Data-loader throughput (samples/s) over a LIBERO HDF5 dataset, for several worker counts side by side; with
`--lerobot_dataset_name`, the same for a LeRobot dataset folder under the same root (e.g. the HDF5 data exported with
export_lerobot.py), and the time to open each (the LeRobot folder's first open converts it, into a fresh cache).

    python scripts/benchmark_data_loader.py --data_root_dir datasets/libero --dataset_name libero_object_no_noops
    python scripts/benchmark_data_loader.py --data_root_dir runs/bench --dataset_name libero_object_no_noops \
        --lerobot_dataset_name libero_object_lerobot --preset libero-cpu --batch_size 64

Each setting runs a warm-up batch (worker start-up) and then times `num_batches` batches of the training
configuration: 2 camera images with augmentation, proprio, the tiny preset's processor (the same image pipeline as
the 7B one: 224 px, 6 channels per image).
"""

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import draccus
import torch

from prismatic.policy.presets import make_config, make_processor
from prismatic.vla.datasets.datasets import LiberoDataset, PaddedCollatorForActionPrediction


@dataclass
class LoaderBenchmarkConfig:
    data_root_dir: Path = Path("datasets/libero")
    dataset_name: str = "libero_object_no_noops"
    preset: str = "tiny"
    batch_size: int = 8
    num_batches: int = 20
    num_workers: List[int] = field(default_factory=lambda: [0, 1, 2])
    num_images_in_input: int = 2
    image_aug: bool = True
    lerobot_dataset_name: Optional[str] = None  # a LeRobot folder under data_root_dir, measured beside the HDF5 data


def throughput(dataset, collate, batch_size: int, workers: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    iterator = iter(loader)
    next(iterator)  # warm-up: worker start-up and first file opens are not throughput
    start = time.perf_counter()
    samples = 0
    for _ in range(batches):
        try:
            samples += len(next(iterator)["actions"])
        except StopIteration:
            iterator = iter(loader)
    return samples / (time.perf_counter() - start)


def open_dataset(cfg: LoaderBenchmarkConfig, name: str) -> tuple[LiberoDataset, float]:
    start = time.perf_counter()
    dataset = LiberoDataset(
        cfg.data_root_dir, name, make_processor(cfg.preset), make_config(cfg.preset),
        num_images_in_input=cfg.num_images_in_input, use_proprio=True, image_aug=cfg.image_aug,
    )  # fmt: skip
    return dataset, time.perf_counter() - start


@draccus.wrap()
def main(cfg: LoaderBenchmarkConfig) -> dict[str, dict[int, float]]:
    torch.set_num_threads(1)  # as in DataLoader workers; keeps the 0-worker figure comparable
    config = make_config(cfg.preset)
    collate = PaddedCollatorForActionPrediction(model_max_length=2048, pad_token_id=config.pad_token_id)
    datasets = {"HDF5": open_dataset(cfg, cfg.dataset_name)}
    print(f"open {cfg.dataset_name} (HDF5): {datasets['HDF5'][1]:.1f} s")
    if cfg.lerobot_dataset_name:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["LIGHTVLA_CACHE"] = cache  # a fresh cache: the first open converts
            first = open_dataset(cfg, cfg.lerobot_dataset_name)[1]
            datasets["LeRobot"] = open_dataset(cfg, cfg.lerobot_dataset_name)
            print(f"open {cfg.lerobot_dataset_name} (LeRobot): {first:.1f} s the first time (converts to HDF5), "
                  f"{datasets['LeRobot'][1]:.1f} s cached")  # fmt: skip
            results = measure(cfg, datasets, collate)
    else:
        results = measure(cfg, datasets, collate)
    return results


def measure(cfg: LoaderBenchmarkConfig, datasets: dict, collate) -> dict[str, dict[int, float]]:
    results: dict[str, dict[int, float]] = {}
    base = None
    for source, (dataset, _) in datasets.items():
        print(
            f"{source}: {len(dataset)} samples in {len(dataset.episodes)} episodes, {cfg.num_images_in_input} images, "
            f"augmentation {'on' if cfg.image_aug else 'off'}, batch {cfg.batch_size}, preset {cfg.preset}"
        )
        results[source] = {}
        for workers in cfg.num_workers:
            rate = results[source][workers] = throughput(dataset, collate, cfg.batch_size, workers, cfg.num_batches)
            base = base or rate
            print(f"  num_workers={workers}: {rate:7.1f} samples/s  ({rate / base:.2f}x the first)")
    return results


if __name__ == "__main__":
    main()
