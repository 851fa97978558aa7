"""Collectives that are no-ops in a single process, so one code path serves CPU, one GPU and DDP."""

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (a new tensor; ``tensor`` itself in a single process)."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks."""
    return all_reduce_sum(tensor) / world_size() if world_size() > 1 else tensor


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
