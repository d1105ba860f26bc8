"""The one training loop of every problem: stages of epochs of mini-batches, one constrained step each.

A problem describes its training as a :class:`Task` -- its model, the problem whose state is saved
(multipliers), the mini-batch arguments of ``compute_cmp_state``, its :class:`Stage` sequence and its
metrics rows -- and :func:`fit` runs it::

    for each epoch (stages in order, entered at their first epoch):
        for each mini-batch of the epoch (a function of seed and epoch only):
            before_step -> optimizer.roll(batch) -> after_step
            a metrics row when due (every `log_every` steps, or at the end of the epoch)
            a checkpoint when due (every `checkpoint_every` steps)
        after_epoch, then the epoch's row and checkpoint

A stage (say sparsity's dense warm-up, gated training, fine-tuning) is entered by
:meth:`Stage.enter`, which receives the previous stage's :class:`Active` (its optimizer, to carry
Adam moments or the skipped-step count from) and returns the new one: what is handed over is explicit.

Checkpoints are atomic, carry a digest and keep the previous one
(:mod:`problems.scaffold.resumable`); a resumed run re-enters the stages up to the saved one, then
loads the model, the problem, the optimizer, the RNG states and the task's own state, and continues at
the saved mini-batch: the result is the one of an uninterrupted run. With a distributed
:class:`~problems.scaffold.ddp.Session` every process trains on its shard of each batch; rank 0
writes the rows and the checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from problems.scaffold.ddp import Session
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.progress import progress
from problems.scaffold.resumable import load_latest_checkpoint, save_rotating_checkpoint
from problems.scaffold.seeding import rng_state, set_rng_state

__all__ = [
    "CHECKPOINT",
    "Active",
    "Fit",
    "LoopSettings",
    "Moment",
    "Position",
    "Stage",
    "Task",
    "epoch_batches",
    "fit",
]

CHECKPOINT = "checkpoint.pt"


def epoch_batches(
    num_examples: int, batch_size: int, seed: int, epoch: int, *, even: bool = False
) -> list[torch.Tensor]:
    r"""Mini-batch indices of one epoch: a function of ``(seed, epoch)`` only, so a resumed run sees the same.

    A random permutation of the :math:`n` examples cut into batches of ``batch_size`` and a smaller
    remainder, or with ``even`` into :math:`k = \lceil n / B \rceil` batches of :math:`\lfloor n/k \rfloor`
    or :math:`\lceil n/k \rceil` examples. A batch that covers every example is ``arange(n)`` (full batch).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size >= num_examples:
        return [torch.arange(num_examples)]
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    if even:
        return list(order.tensor_split(-(-num_examples // batch_size)))
    return list(order.split(batch_size))


@dataclass
class Active:
    """What a stage trains with.

    Attributes:
        optimizer: The constrained optimizer whose ``roll`` makes each step.
        forward: The module put in training mode at the start of every epoch (the model, or its
            DDP / autocast wrapper); ``None``: nothing is switched.
        start_epoch: Called at the start of every epoch after ``forward.train()`` (e.g. freeze gates).
        before_step: Called before every step with the :class:`Moment` (e.g. a learning-rate schedule).
        after_step: Called after every step with the :class:`Moment` (masks, schedulers, counters).
        after_epoch: Called at the end of every epoch, before its row, with the (0-based) epoch.
    """

    optimizer: cooper.optim.CooperOptimizer
    forward: nn.Module | None = None
    start_epoch: Callable[[], None] | None = None
    before_step: Callable[[Moment], None] | None = None
    after_step: Callable[[Moment], None] | None = None
    after_epoch: Callable[[int], None] | None = None


@dataclass
class Stage:
    """A named run of ``epochs`` epochs; ``enter(previous)`` builds its :class:`Active` when it starts.

    ``previous`` is the stage before's :class:`Active` (``None`` for the first stage). On resume the
    stages before the saved one are entered again, then every state is loaded over them.
    """

    name: str
    epochs: int
    enter: Callable[[Active | None], Active]


@dataclass
class Moment:
    """Where the loop stands when it calls a hook or asks for a row.

    ``epoch`` and ``batch`` are 0-based; ``step`` counts the steps made so far (this one included);
    ``roll_out`` is the last step's; ``epoch_loss`` is the mean training loss of the epoch at its end
    (``None`` inside an epoch); ``end_of_epoch`` tells which.
    """

    stage: str
    epoch: int
    batch: int
    batches: int
    step: int
    roll_out: cooper.optim.RollOut | None = None
    epoch_loss: float | None = None
    end_of_epoch: bool = False


class Task:
    """What a problem gives the loop. Subclass it and set ``model`` and ``problem``.

    Attributes:
        model: The network (checkpointed; the problem's evaluation uses it).
        problem: The problem whose ``state_dict`` (multipliers) is checkpointed.
        num_examples: Training examples (the batches index them).
    """

    model: nn.Module
    problem: cooper.ConstrainedMinimizationProblem
    num_examples: int

    def stages(self) -> list[Stage]:
        """The stages in order."""
        raise NotImplementedError

    def batch(self, indices: torch.Tensor) -> dict[str, Any]:
        """The ``compute_cmp_state`` arguments of the examples ``indices``."""
        raise NotImplementedError

    def row(self, moment: Moment) -> dict[str, Any]:
        """The metrics row at ``moment`` (must hold ``"step"``); ``{}`` logs nothing."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The task's own entries of the checkpoint (weights-only loadable; top-level keys other than the loop's)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the task's entries from the loaded checkpoint ``state`` (all of it, loop keys included)."""


@dataclass(frozen=True)
class LoopSettings:
    """How the loop batches, logs and checkpoints.

    Attributes:
        seed: Seed of the batch order.
        batch_size: Mini-batch size (``>= num_examples``: full batch).
        even_batches: Cut each epoch into batches of equal size (:func:`epoch_batches`).
        log_every: A row every this many steps (and after the last one); ``None``: at every epoch's end.
        out: Where checkpoints go (``None``: no checkpoint); the same on every process (rank 0 writes).
        checkpoint_every: Also checkpoint every this many steps inside an epoch (``0``: at epoch ends only).
        resume: A run directory (or checkpoint file) to continue from.
        show_progress: A progress bar over the epochs on a terminal.
    """

    seed: int
    batch_size: int
    even_batches: bool = False
    log_every: int | None = None
    out: Path | None = None
    checkpoint_every: int = 0
    resume: Path | None = None
    show_progress: bool = True


@dataclass
class Position:
    """Where a run stands: the next (epoch, batch) to train, the steps made and what they accumulated.

    ``batch_losses`` holds, for each batch of the current epoch, ``[loss * n, n]`` summed over the
    processes; ``pending`` holds this process's rows not yet summed.
    """

    stage: int = 0
    epoch: int = 0
    batch: int = 0
    step: int = 0
    wall_time: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    batch_losses: list[list[float]] = field(default_factory=list)
    pending: list[list[float]] = field(default_factory=list)

    def flush(self) -> None:
        """Sum the pending loss rows over the processes (a collective: every process calls it together)."""
        if self.pending:
            summed = cooper.distributed.global_sum(torch.tensor(self.pending, dtype=torch.float64))
            self.batch_losses.extend(summed.tolist())
            self.pending = []

    def epoch_loss(self) -> float:
        """Mean over the epoch's batches of the batch loss, skipped (non-finite) batches left out."""
        self.flush()
        means = [total / count for total, count in self.batch_losses if count > 0]
        finite = [mean for mean in means if math.isfinite(mean)]
        return sum(finite) / len(finite) if finite else float("nan")


@dataclass
class Fit:
    """What :func:`fit` returns: the rows, the steps, the training time and the last stage's :class:`Active`.

    ``wall_time_s`` counts the epochs' steps and hooks, not the rows nor the checkpoints;
    ``step_seconds`` holds the duration of every ``roll`` of this process (since a resume).
    """

    history: list[dict[str, Any]]
    steps: int
    wall_time_s: float
    active: Active
    step_seconds: list[float]


def fit(
    task: Task,
    settings: LoopSettings,
    *,
    session: Session | None = None,
    logger: MetricsLogger | None = None,
    on_step: Callable[[Task, Active, int], None] | None = None,
) -> Fit:
    """Train ``task`` through its stages; log rows to ``logger`` and checkpoint into ``settings.out``.

    ``on_step(task, active, step)`` is called after every step (tests, monitoring).
    """
    session = session or Session()
    stages = [stage for stage in task.stages() if stage.epochs > 0]
    if not stages:
        raise ValueError("a task needs at least one stage with epochs > 0")
    first_epochs = [sum(stage.epochs for stage in stages[:index]) for index in range(len(stages))]
    total_epochs = sum(stage.epochs for stage in stages)
    if settings.resume is not None:
        position, active = restore(task, stages, settings.resume, session)
    else:
        position, active = Position(), stages[0].enter(None)
    if logger is not None:
        for row in position.history:
            logger.log(**row)
    step_seconds: list[float] = []
    epochs: Any = range(position.epoch, total_epochs)
    if settings.show_progress:
        epochs = progress(epochs, desc="epochs", initial=position.epoch, total=total_epochs)
    for epoch in epochs:
        while position.stage + 1 < len(stages) and epoch >= first_epochs[position.stage + 1]:
            position.stage += 1
            active = stages[position.stage].enter(active)
        stage = stages[position.stage].name
        started = time.perf_counter()
        if active.forward is not None:
            active.forward.train()
        if active.start_epoch is not None:
            active.start_epoch()
        batches = epoch_batches(
            task.num_examples, settings.batch_size, settings.seed, epoch, even=settings.even_batches
        )
        for index in range(position.batch, len(batches)):
            moment = Moment(stage, epoch, index, len(batches), position.step + 1)
            if active.before_step is not None:
                active.before_step(moment)
            if (
                len(batches[index]) >= session.world
            ):  # a last batch smaller than the number of processes is dropped
                local = session.shard(batches[index])
                tick = time.perf_counter()
                moment.roll_out = active.optimizer.roll(task.batch(local))
                step_seconds.append(time.perf_counter() - tick)
                loss = moment.roll_out.loss
                position.pending.append(
                    [(float(loss.detach()) if loss is not None else math.nan) * len(local), float(len(local))]
                )
            position.batch, position.step = index + 1, position.step + 1
            if active.after_step is not None:
                active.after_step(moment)
            if on_step is not None:
                on_step(task, active, position.step)
            last_step = epoch + 1 == total_epochs and index + 1 == len(batches)
            if settings.log_every is not None and (position.step % settings.log_every == 0 or last_step):
                position.wall_time += time.perf_counter() - started
                log_row(task, moment, position, session, logger)
                started = time.perf_counter()
            if (
                settings.checkpoint_every
                and position.step % settings.checkpoint_every == 0
                and index + 1 < len(batches)
            ):
                position.wall_time += time.perf_counter() - started
                checkpoint(task, active, stages, settings, session, position)
                started = time.perf_counter()
        if active.after_epoch is not None:
            active.after_epoch(epoch)
        position.wall_time += time.perf_counter() - started
        end = Moment(
            stage,
            epoch,
            len(batches),
            len(batches),
            position.step,
            epoch_loss=position.epoch_loss(),
            end_of_epoch=True,
        )
        position.epoch, position.batch, position.batch_losses = epoch + 1, 0, []
        if settings.log_every is None:
            log_row(task, end, position, session, logger)
        checkpoint(task, active, stages, settings, session, position)
    return Fit(position.history, position.step, position.wall_time, active, step_seconds)


def log_row(
    task: Task, moment: Moment, position: Position, session: Session, logger: MetricsLogger | None
) -> None:
    """Ask the task for its row at ``moment`` (rank 0 only); keep it in the history and log it."""
    if not session.writes:
        return
    row = task.row(moment)
    if row:
        position.history.append(row)
        if logger is not None:
            logger.log(**row)


def checkpoint(
    task: Task,
    active: Active,
    stages: Sequence[Stage],
    settings: LoopSettings,
    session: Session,
    position: Position,
) -> None:
    """Write the run's checkpoint (rank 0; every process sums its pending losses first), keeping the previous."""
    if settings.out is None:
        return
    position.flush()
    if not session.writes:
        return
    payload: dict[str, Any] = {
        "model": task.model.state_dict(),
        "problem": task.problem.state_dict(),
        "optimizer": active.optimizer.state_dict(),
        "phase": stages[position.stage].name,
        "epoch": position.epoch,
        "batch": position.batch,
        "step": position.step,
        "batch_losses": position.batch_losses,
        "wall_time_s": position.wall_time,
        "rng": rng_state(),
        "history": position.history,
    }
    extras = task.state_dict()
    clashes = sorted(set(extras) & set(payload))
    if clashes:
        raise ValueError(f"{type(task).__name__}.state_dict() uses the loop's checkpoint keys {clashes}")
    payload.update(extras)
    save_rotating_checkpoint(payload, Path(settings.out) / CHECKPOINT)


def restore(task: Task, stages: Sequence[Stage], source: Path, session: Session) -> tuple[Position, Active]:
    """Re-enter the stages up to the checkpoint's, then load every state saved in it; return where it stands.

    ``source`` is a run directory or a checkpoint file. A damaged checkpoint is reported and set aside
    (by rank 0) and the previous one used; every process must resume from the same step.
    """
    path = Path(source)
    state, read = load_latest_checkpoint(
        path / CHECKPOINT if path.is_dir() else path, set_aside=session.writes
    )
    names = [stage.name for stage in stages]
    saved = str(state.get("phase", names[0]))
    if saved not in names:
        raise ValueError(
            f"the checkpoint {str(read)!r} is in stage {saved!r}, which this run does not have: {names}"
        )
    active = stages[0].enter(None)
    for stage in stages[1 : names.index(saved) + 1]:
        active = stage.enter(active)
    task.model.load_state_dict(state["model"])
    task.problem.load_state_dict(state["problem"])
    active.optimizer.load_state_dict(state["optimizer"])
    task.load_state_dict(state)
    set_rng_state(state["rng"])
    position = Position(
        stage=names.index(saved),
        epoch=int(state["epoch"]),
        batch=int(state.get("batch", 0)),
        step=int(state.get("step", 0)),
        wall_time=float(state["wall_time_s"]),
        history=list(state["history"]),
        batch_losses=[list(row) for row in state.get("batch_losses", [])],
    )
    if session.distributed:
        steps = cooper.distributed.global_sum(torch.tensor([position.step], dtype=torch.int64))
        if int(steps) != position.step * session.world:
            raise RuntimeError(
                f"the processes resumed from different checkpoints (rank {session.rank} read {read}, "
                f"step {position.step}); resume from a directory every process sees the same way"
            )
    return position, active
