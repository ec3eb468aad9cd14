"""Data parallelism: torchrun's environment -> process group (NCCL on GPUs, gloo on the CPU), and the end-of-run check
that every rank holds the same weights."""

import contextlib
import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class TrainingProcess:
    """This process's place among the training processes (one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_distributed(timeout_minutes: int = 60) -> TrainingProcess:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*) -> process group; plain python: one process.

    Collectives wait up to ``timeout_minutes``: the other ranks sit in a barrier while rank 0 writes a checkpoint
    (~15 GB for 7B), longer than NCCL's default 10 minutes on slow disks.
    """
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:
        return TrainingProcess(device=torch.device("cuda", 0) if cuda else torch.device("cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return TrainingProcess(dist.get_rank(), dist.get_world_size(), local_rank, device)


def check_ranks_in_sync(policy: nn.Module, process: TrainingProcess) -> None:
    """Data parallelism must leave every rank with the same weights; say so (or fail loudly) at the end of a run."""
    if process.world_size == 1:
        return
    checksum = torch.stack([p.detach().double().sum() for p in policy.parameters()]).sum().to(process.device)
    gathered = [torch.zeros_like(checksum) for _ in range(process.world_size)]
    dist.all_gather(gathered, checksum)
    values = [float(v) for v in gathered]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"ranks diverged: parameter checksums {values}")
    if process.main:
        print(f"[finetune] parameters identical on all {process.world_size} ranks (checksum {values[0]:.6f})")


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Around a micro-step's forward and backward: DDP all-reduces the gradients on every backward unless told not
    to, and under gradient accumulation only the last micro-step of an optimizer step needs it."""
    if isinstance(model, DistributedDataParallel) and not sync:
        return model.no_sync()
    return contextlib.nullcontext()


def gather_objects(obj, process: TrainingProcess) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if process.world_size == 1:
        return [obj]
    gathered = [None] * process.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
