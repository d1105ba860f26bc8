"""Multi-process training sessions for the trainers: ``torchrun`` + gloo + DistributedDataParallel.

A trainer asks :func:`start_session` for its place among the processes, wraps its model with
:meth:`Session.wrap`, gives each process :meth:`Session.shard` of every global batch, lets rank 0
write every file (:attr:`Session.writes`), and ends with :meth:`Session.close`. Without
``distributed`` the session is the single process (rank 0 of 1) and every method is a no-op.

Launch: ``torchrun --nproc-per-node 2 -m problems.sparsity train ... --distributed`` (``torchrun``
sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``). On a machine with several
network interfaces set ``GLOO_SOCKET_IFNAME`` (``lo`` for one machine).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["INIT_TIMEOUT", "Session", "start_session"]

INIT_TIMEOUT = datetime.timedelta(minutes=5)
"""How long the processes wait for each other (at start-up and in every collective)."""

_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Session:
    """This process's place in the run.

    Attributes:
        rank: Index of this process (0 writes the outputs).
        world: Number of processes.
        owns_group: Whether :func:`start_session` created the process group (and :meth:`close` ends it).
    """

    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world > 1 or self.owns_group

    @property
    def writes(self) -> bool:
        """Whether this process writes logs, checkpoints and results (rank 0)."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a global batch (sizes differ by at most one)."""
        return batch.tensor_split(self.world)[self.rank] if self.world > 1 else batch

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` (which also copies rank 0's parameters everywhere), or ``model``."""
        return nn.parallel.DistributedDataParallel(model) if self.distributed else model

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """End the process group if this session created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def start_session(distributed: bool, timeout: datetime.timedelta = INIT_TIMEOUT) -> Session:
    """The single process, or this process's place in a gloo process group (created from ``torchrun``'s
    environment unless one is already initialised).

    Raises:
        RuntimeError: ``distributed`` without a process group and without the launcher's variables.
    """
    if not distributed:
        return Session()
    owns = False
    if not dist.is_initialized():
        missing = [name for name in _LAUNCH_VARIABLES if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"--distributed needs a launcher: the environment lacks {missing}. Start the run with "
                "`torchrun --nproc-per-node N -m problems.sparsity train ... --distributed`"
            )
        dist.init_process_group("gloo", timeout=timeout)
        owns = True
    return Session(rank=dist.get_rank(), world=dist.get_world_size(), owns_group=owns)
