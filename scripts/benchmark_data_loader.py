"""Data-loader throughput (samples/s) over a LIBERO HDF5 dataset, for several worker counts side by side.

    python scripts/benchmark_data_loader.py --data_root_dir datasets/libero --dataset_name libero_object_no_noops

Each setting runs a warm-up batch (worker start-up) and then times `num_batches` batches of the training
configuration: 2 camera images with augmentation, proprio, the tiny preset's processor (the same image pipeline as
the 7B one: 224 px, 6 channels per image).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

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


@draccus.wrap()
def main(cfg: LoaderBenchmarkConfig) -> dict[int, float]:
    torch.set_num_threads(1)  # as in DataLoader workers; keeps the 0-worker figure comparable
    config = make_config(cfg.preset)
    dataset = LiberoDataset(
        cfg.data_root_dir, cfg.dataset_name, make_processor(cfg.preset), config,
        num_images_in_input=cfg.num_images_in_input, use_proprio=True, image_aug=cfg.image_aug,
    )  # fmt: skip
    collate = PaddedCollatorForActionPrediction(model_max_length=2048, pad_token_id=config.pad_token_id)
    print(
        f"{cfg.dataset_name}: {len(dataset)} samples in {len(dataset.episodes)} episodes, "
        f"{cfg.num_images_in_input} images, augmentation {'on' if cfg.image_aug else 'off'}, batch {cfg.batch_size}"
    )
    results = {}
    for workers in cfg.num_workers:
        results[workers] = throughput(dataset, collate, cfg.batch_size, workers, cfg.num_batches)
        print(
            f"  num_workers={workers}: {results[workers]:7.1f} samples/s  "
            f"({results[workers] / results[cfg.num_workers[0]]:.2f}x)"
        )
    return results


if __name__ == "__main__":
    main()
