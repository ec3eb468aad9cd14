"""Data parallelism: torchrun's environment -> process group (NCCL on GPUs, gloo on the CPU), and the end-of-run check
that every rank holds the same weights."""

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
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


def init_distributed() -> Dist:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*) -> process group; plain python: one process."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:
        return Dist(device=torch.device("cuda", 0) if cuda else torch.device("cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


def check_ranks_in_sync(policy: nn.Module, d: Dist) -> None:
    """Data parallelism must leave every rank with the same weights; say so (or fail loudly) at the end of a run."""
    if d.world_size == 1:
        return
    checksum = torch.stack([p.detach().double().sum() for p in policy.parameters()]).sum().to(d.device)
    gathered = [torch.zeros_like(checksum) for _ in range(d.world_size)]
    dist.all_gather(gathered, checksum)
    values = [float(v) for v in gathered]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"ranks diverged: parameter checksums {values}")
    if d.main:
        print(f"[finetune] parameters identical on all {d.world_size} ranks (checksum {values[0]:.6f})")
