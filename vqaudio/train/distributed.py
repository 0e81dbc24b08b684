"""Data-parallel training on PyTorch's own engine: processes started by torchrun, DDP, NCCL or gloo.

`torchrun --nproc_per_node=N -m vqaudio train RECIPE.yaml` starts N copies of the command with
RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address in the environment. Each process joins
the group here, takes its GPU (`cuda:LOCAL_RANK`) or stays on the CPU (gloo), trains on its own
share of every step's batch, and only rank 0 writes the run folder, logs and progress.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vqaudio.errors import VQAudioError
from vqaudio.train.rng import preserved_rng

# Long enough for rank 0 to validate or write a checkpoint while the others wait at the next step.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    """True when the environment holds a torchrun job of more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise VQAudioError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; start with torchrun") from None


@contextlib.contextmanager
def distributed_job(device: torch.device) -> Iterator[tuple[Distributed, torch.device]]:
    """Join the torchrun process group for the duration (NCCL for CUDA, gloo for the CPU) and
    yield this process's place in it and its device; outside torchrun, one process as is.

    On CUDA each process takes the GPU of its LOCAL_RANK. A group that already existed (a
    notebook or a launcher that set it up) is used and left open.
    """
    if not launched_by_torchrun():
        yield SINGLE, device
        return
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as exc:
        raise VQAudioError(f"torchrun environment incomplete or malformed ({exc}); start with torchrun") from None
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise VQAudioError(
                f"rank {rank} wants cuda:{local} but this machine has {torch.cuda.device_count()} GPU(s); "
                "lower --nproc_per_node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield Distributed(rank=rank, world_size=world, local_rank=local), device
    finally:
        if owned:
            dist.destroy_process_group()


def barrier(job: Distributed) -> None:
    if job.enabled:
        dist.barrier()


def broadcast_text(job: Distributed, text: str | None, device: torch.device) -> str:
    """Rank 0's string on every rank (bytes in a tensor: nothing is pickled)."""
    if not job.enabled:
        assert text is not None
        return text
    data = torch.tensor(list((text or "").encode()), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.long, device=device)
    dist.broadcast(size, src=0)
    if not job.is_main:
        data = torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).decode()


def all_ranks(job: Distributed, value: int, device: torch.device) -> list[int]:
    """A signed 64-bit value from every rank, in rank order."""
    mine = torch.tensor([value], dtype=torch.long, device=device)
    if not job.enabled:
        return [value]
    gathered = [torch.empty_like(mine) for _ in range(job.world_size)]
    dist.all_gather(gathered, mine)
    return [int(t) for t in gathered]


def reduce_step(job: Distributed, values: torch.Tensor) -> torch.Tensor:
    """Sum a small vector (flags and per-rank metrics) over ranks; identity for one process."""
    if job.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def has_unused_parameters(model: nn.Module, probe_step: Callable[[nn.Module], torch.Tensor], device: torch.device) -> bool:
    """Whether some parameter gets no gradient (the PixelCNN's last vertical layer, say), found by
    one step (`probe_step(copy) -> loss`) on a copy of the model. DDP must then look for them after
    every backward pass, which costs a graph traversal, so it is only asked to when needed. Every
    random generator (the CPU's, and the GPU's on CUDA) is left as it was."""
    with preserved_rng(device):
        probe = copy.deepcopy(model).train()
        probe_step(probe).backward()
        return any(p.grad is None for p in probe.parameters() if p.requires_grad)


def data_parallel(step_module: nn.Module, device: torch.device, find_unused: bool) -> DistributedDataParallel:
    """Wrap the step in DDP. Buffers are not synchronised in forward: the quantiser keeps its
    codebook identical on every rank by summing its statistics (the fingerprints compared at
    each checkpoint check that), and a broadcast would hide a rank that drifted."""
    options: dict[str, Any] = {
        "device_ids": [device.index] if device.type == "cuda" else None,
        "find_unused_parameters": find_unused,
    }
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        options["forward_sync_buffers"] = False  # still syncs once at start: every rank begins equal
    else:
        options["broadcast_buffers"] = False
    return DistributedDataParallel(step_module, **options)
