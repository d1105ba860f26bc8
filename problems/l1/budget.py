"""The cost of a method, counted the same way for every method."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Budget"]


@dataclass
class Budget:
    """What a method spent.

    Attributes:
        runs: Training runs started (from scratch or warm-started).
        gradient_evaluations: Per-example gradients: a mini-batch gradient of ``B`` examples counts ``B``,
            a full-batch gradient counts the size of the training set.
        loss_evaluations: Per-example forward passes that were *not* part of a gradient evaluation (line
            searches, say); reported separately.
        started: ``time.perf_counter()`` at creation (wall time is measured from there).
    """

    runs: int = 0
    gradient_evaluations: int = 0
    loss_evaluations: int = 0
    started: float = field(default_factory=time.perf_counter)
    stopped: float | None = None

    def gradients(self, examples: int) -> None:
        """Count one gradient evaluation over ``examples`` examples."""
        self.gradient_evaluations += int(examples)

    def losses(self, examples: int) -> None:
        """Count one loss-only evaluation over ``examples`` examples."""
        self.loss_evaluations += int(examples)

    def stop(self) -> None:
        """Freeze the wall time (called when the method is done)."""
        self.stopped = time.perf_counter()

    def wall_time(self) -> float:
        """Seconds from creation to :meth:`stop` (or to now, before it)."""
        end = self.stopped if self.stopped is not None else time.perf_counter()
        return end - self.started

    def as_dict(self) -> dict[str, float | int]:
        return {
            "runs": self.runs,
            "gradient_evaluations": self.gradient_evaluations,
            "loss_evaluations": self.loss_evaluations,
            "wall_time_s": self.wall_time(),
        }
