"""Training batches: sharded shuffled loading that resumes mid-epoch exactly."""

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from prismatic.training.config import FinetuneConfig
from prismatic.training.distributed import TrainingProcess
from prismatic.vla.datasets.datasets import DatasetError


class EpochTaggedSampler(Sampler):
    """Yields ``(epoch, index)``: the epoch travels with every index to the DataLoader workers. Persistent workers
    (which keep their frame caches from epoch to epoch) hold their own copy of the dataset, which never sees
    ``set_epoch``; the augmentation reads the epoch from the index instead."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def make_loader(
    cfg: FinetuneConfig, dataset, collate, process: TrainingProcess
) -> tuple[DataLoader, DistributedSampler]:
    sampler = DistributedSampler(
        dataset, num_replicas=process.world_size, rank=process.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    if len(sampler) < cfg.batch_size:
        raise DatasetError(
            f"--batch_size {cfg.batch_size} is larger than the {len(sampler)} samples each of the {process.world_size} "
            f"process(es) gets from {cfg.dataset_name} ({len(dataset)} in all): lower --batch_size or add data."
        )
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=EpochTaggedSampler(sampler), num_workers=cfg.num_workers,
        collate_fn=collate, drop_last=True, pin_memory=process.device.type == "cuda", persistent_workers=cfg.num_workers > 0,
        generator=_loader_generator(cfg.seed),
    )  # fmt: skip
    return loader, sampler


def _loader_generator(seed: int) -> torch.Generator:
    """DataLoaders draw worker seeds from this, not from the global RNG, whose state (pruning noise) a checkpoint
    restores: otherwise creating the resumed iterator would shift every later random draw."""
    return torch.Generator().manual_seed(seed)


def batches(loader: DataLoader, sampler: DistributedSampler, dataset, start: int):
    """Micro-batches from global index `start` on, epoch after epoch; resuming continues the very same sequence."""
    per_epoch = len(loader)
    epoch, skip = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        iterator = iter(loader) if skip == 0 else _skipped(loader, sampler, skip)
        yield from iterator
        epoch, skip = epoch + 1, 0


def _skipped(loader: DataLoader, sampler: DistributedSampler, skip: int):
    """The rest of an epoch after `skip` batches, without loading the skipped samples."""
    indices = list(EpochTaggedSampler(sampler))[skip * loader.batch_size :]
    rest = DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=indices, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, drop_last=True, pin_memory=loader.pin_memory, generator=loader.generator,
    )  # fmt: skip
    return iter(rest)


def to_device(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if value.is_floating_point() and key == "pixel_values":
                value = value.to(dtype)
        out[key] = value
    return out
