"""The shared training loop: batches, stages and their hand-over, hooks, rows, checkpoints and exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import cooper_like as cooper
from problems.scaffold.loop import CHECKPOINT, Active, LoopSettings, Moment, Stage, Task, epoch_batches, fit
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.resumable import save_rotating_checkpoint


def test_epoch_batches_depend_on_seed_and_epoch_only() -> None:
    first = epoch_batches(10, 3, seed=4, epoch=2)
    assert [b.tolist() for b in first] == [b.tolist() for b in epoch_batches(10, 3, seed=4, epoch=2)]
    assert [len(b) for b in first] == [3, 3, 3, 1]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    assert torch.cat(first).tolist() != torch.cat(epoch_batches(10, 3, seed=4, epoch=3)).tolist()
    assert torch.cat(first).tolist() != torch.cat(epoch_batches(10, 3, seed=5, epoch=2)).tolist()


def test_even_batches_and_full_batch() -> None:
    even = epoch_batches(10, 3, seed=0, epoch=0, even=True)
    assert [len(b) for b in even] == [3, 3, 2, 2]
    assert sorted(torch.cat(even).tolist()) == list(range(10))
    for flag in (False, True):
        (full,) = epoch_batches(10, 10, seed=0, epoch=0, even=flag)
        assert full.tolist() == list(range(10))


def test_epoch_batches_reject_an_empty_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        epoch_batches(10, 0, seed=0, epoch=0)


class Regression(cooper.ConstrainedMinimizationProblem):
    """Least squares with ``mean(w) <= -0.2``: a multiplier to save and restore."""

    def __init__(self, model: nn.Linear) -> None:
        super().__init__()
        self.model = model
        self.bound = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
        )

    def compute_cmp_state(self, inputs: torch.Tensor, targets: torch.Tensor) -> cooper.CMPState:
        loss = nn.functional.mse_loss(self.model(inputs).squeeze(-1), targets)
        violation = self.model.weight.mean().reshape(1) + 0.2
        return cooper.CMPState(
            loss=loss, observed_constraints={self.bound: cooper.ConstraintState(violation)}
        )


class TwoStages(Task):
    """A constrained stage (SGD + dual ascent, gradient noise from dropout), then an unconstrained one
    with Adam: the second stage is handed the first one's optimizer."""

    def __init__(self, epochs: tuple[int, int] = (2, 2)) -> None:
        torch.manual_seed(0)
        self.inputs, self.targets = torch.randn(20, 3), torch.randn(20)
        self.model = nn.Linear(3, 1)
        self.dropout = nn.Dropout(0.3)  # random numbers drawn in every step: the RNG must be restored
        self.problem = Regression(self.model)
        self.num_examples = 20
        self.epochs = epochs
        self.calls: list[tuple[Any, ...]] = []
        self.handed: list[Active | None] = []
        self.extra = torch.zeros(1)

    def stages(self) -> list[Stage]:
        return [
            Stage("first", self.epochs[0], self.enter_first),
            Stage("second", self.epochs[1], self.enter_second),
        ]

    def enter_first(self, previous: Active | None) -> Active:
        self.handed.append(previous)
        optimizer = cooper.optim.SimultaneousOptimizer(
            self.problem,
            torch.optim.SGD(self.model.parameters(), lr=0.05),
            torch.optim.SGD(self.problem.dual_parameters(), lr=0.1, maximize=True),
        )
        return Active(
            optimizer,
            forward=self.dropout,
            start_epoch=lambda: self.calls.append(("start_epoch",)),
            before_step=lambda moment: self.calls.append(("before", moment.step)),
            after_step=lambda moment: self.calls.append(("after", moment.step, moment.roll_out is not None)),
            after_epoch=lambda epoch: self.calls.append(("after_epoch", epoch)),
        )

    def enter_second(self, previous: Active | None) -> Active:
        self.handed.append(previous)
        adam = torch.optim.Adam(self.model.parameters(), lr=0.01)
        return Active(cooper.optim.UnconstrainedOptimizer(self.problem, adam))

    def batch(self, indices: torch.Tensor) -> dict[str, Any]:
        self.extra += 1
        return {"inputs": self.dropout(self.inputs[indices]), "targets": self.targets[indices]}

    def row(self, moment: Moment) -> dict[str, Any]:
        return {
            "step": moment.step,
            "stage": moment.stage,
            "epoch_loss": moment.epoch_loss if moment.epoch_loss is not None else float("nan"),
            "end": moment.end_of_epoch,
            "multiplier": float(self.problem.bound.multiplier.weight.detach().sum()),  # type: ignore[union-attr]
        }

    def state_dict(self) -> dict[str, Any]:
        return {"extra": self.extra.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.extra = state["extra"].clone()


def settings(tmp_path: Path | None = None, **changes: Any) -> LoopSettings:
    values: dict[str, Any] = {"seed": 3, "batch_size": 6, "show_progress": False, "out": tmp_path}
    return LoopSettings(**{**values, **changes})


def test_stages_run_in_order_with_their_hand_over_and_hooks() -> None:
    task = TwoStages()
    result = fit(task, settings())
    assert result.steps == 4 * 4  # 4 epochs of batches 6, 6, 6, 2
    first, second = task.handed
    assert (
        first is None
        and second is not None
        and isinstance(second.optimizer, cooper.optim.SimultaneousOptimizer)
    )
    assert isinstance(result.active.optimizer, cooper.optim.UnconstrainedOptimizer)
    # hooks of the first stage only, in order: start of epoch, before/after every step, end of epoch
    assert task.calls[:3] == [("start_epoch",), ("before", 1), ("after", 1, True)]
    assert task.calls.count(("start_epoch",)) == 2 and ("after_epoch", 1) in task.calls
    assert not any(call[0] == "before" and call[1] > 8 for call in task.calls)
    # one row at each epoch's end, with the epoch's mean loss
    assert [row["step"] for row in result.history] == [4, 8, 12, 16]
    assert [row["stage"] for row in result.history] == ["first", "first", "second", "second"]
    assert all(row["end"] and row["epoch_loss"] > 0 for row in result.history)
    assert len(result.step_seconds) == 16


def test_rows_every_few_steps_and_after_the_last(tmp_path: Path) -> None:
    task = TwoStages(epochs=(1, 1))
    with MetricsLogger(tmp_path) as logger:
        result = fit(task, settings(log_every=3), logger=logger)
    assert [row["step"] for row in result.history] == [3, 6, 8]
    assert [row["step"] for row in logger.rows] == [3, 6, 8]
    assert not any(row["end"] for row in result.history)


def test_the_last_batch_smaller_than_the_processes_is_dropped() -> None:
    from problems.scaffold.ddp import Session

    task = TwoStages(epochs=(1, 0))
    # a session of 3 processes as seen by rank 0 (no process group needed for this part of the loop)
    session = Session(rank=0, world=3)
    result = fit(task, settings(batch_size=6), session=session)
    assert result.steps == 4 and len(result.step_seconds) == 3  # the batch of 2 is dropped, its step counted


def interrupted(task: TwoStages, after: int) -> Any:
    def crash(_: Task, __: Active, step: int) -> None:
        if step == after:
            raise KeyboardInterrupt

    return crash


@pytest.mark.parametrize("crash_after", [3, 4, 6, 9, 12])
def test_a_resumed_run_ends_exactly_as_an_uninterrupted_one(tmp_path: Path, crash_after: int) -> None:
    """Crash inside an epoch, at an epoch's end, at the end of the first stage and inside the second."""
    whole = TwoStages()
    expected = fit(whole, settings(tmp_path / "whole", checkpoint_every=2))

    broken = TwoStages()
    with pytest.raises(KeyboardInterrupt):
        fit(broken, settings(tmp_path / "run", checkpoint_every=2), on_step=interrupted(broken, crash_after))
    resumed = TwoStages()
    torch.manual_seed(1234)  # the RNG state comes from the checkpoint, not from here
    result = fit(resumed, settings(tmp_path / "run", checkpoint_every=2, resume=tmp_path / "run"))

    assert result.steps == expected.steps
    assert result.history == expected.history
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert torch.equal(
        resumed.problem.bound.multiplier.weight,  # type: ignore[union-attr]
        whole.problem.bound.multiplier.weight,  # type: ignore[union-attr]
    )
    assert torch.equal(resumed.extra, whole.extra)  # the task's own state travels too


def test_a_task_needs_a_stage_with_epochs() -> None:
    with pytest.raises(ValueError, match="at least one stage with epochs > 0"):
        fit(TwoStages(epochs=(0, 0)), settings())


def test_a_task_state_may_not_use_the_loop_keys(tmp_path: Path) -> None:
    class Clashing(TwoStages):
        def state_dict(self) -> dict[str, Any]:
            return {"model": 1, "step": 2}

    with pytest.raises(
        ValueError, match=r"Clashing.state_dict\(\) uses the loop's checkpoint keys \['model', 'step'\]"
    ):
        fit(Clashing(), settings(tmp_path))


def test_a_checkpoint_of_another_stage_sequence_is_refused(tmp_path: Path) -> None:
    fit(TwoStages(epochs=(1, 0)), settings(tmp_path))
    payload = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    payload.pop("sha256")
    save_rotating_checkpoint({**payload, "phase": "warmup"}, tmp_path / CHECKPOINT)
    with pytest.raises(
        ValueError, match=r"is in stage 'warmup', which this run does not have: \['first', 'second'\]"
    ):
        fit(TwoStages(), settings(tmp_path, resume=tmp_path))
