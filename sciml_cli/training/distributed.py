"""Data-parallel training: one process per device, gradients averaged after every backward.

``sciml train trainer.devices=N`` starts N processes on this machine with the environment
``torchrun`` gives its workers (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); a job started by ``torchrun`` itself (or by ``srun`` with that environment)
is detected from it. All ranks
build the same model from the same seed and compute the same global batch; each keeps its own
share of it (:meth:`sciml_cli.models.base.Model.shard`): disjoint collocation points for a PINN,
disjoint samples for operator data. After each backward the gradients are averaged over the
ranks in one collective, so every rank takes the same optimiser step (Adam, SGD and L-BFGS
alike: L-BFGS's line search calls the closure, and with it the collective, in lockstep).

This is what :class:`torch.nn.parallel.DistributedDataParallel` does, without its wrapper: a
method's loss calls its network in several places (a PINN's derivative passes, the closure of
L-BFGS), which the wrapper's forward hook does not see; one flattened all-reduce after backward
sees every gradient.

Rank 0 writes everything (checkpoints, logs, TensorBoard, plots, metrics); the others write
nothing. A checkpoint holds no trace of the number of processes, so it resumes on any number.
The backend is NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

#: seconds the other ranks get to stop on their own after one failed, before they are killed
STOP_GRACE_S = 30.0


def world_size() -> int:
    """Processes in this job (1 outside ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def active() -> bool:
    """Whether the process group is up (this is one rank of several)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def start(device: torch.device) -> None:
    """Join the job's process group: NCCL for CUDA devices, gloo otherwise."""
    if world_size() <= 1 or active():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average_(tensors: Iterable[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in one collective."""
    tensors = [t for t in tensors if t is not None]
    if not tensors or not active():
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def broadcast_(tensors: Iterable[torch.Tensor]) -> None:
    """Rank 0's values of ``tensors`` on every rank."""
    if not active():
        return
    with torch.no_grad():  # parameters are leaves that require grad
        for t in tensors:
            dist.broadcast(t, src=0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (e.g. a stop signal that reached one process first):
    all ranks then stop at the same step."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
