r"""Feasible learning (Ramirez et al., AISTATS 2025): every training example must be fit.

.. math::
    \min_\theta \ w \cdot \frac1n \sum_i \ell_i(\theta)
    \quad \text{s.t.} \quad \ell_i(\theta) \le \epsilon \quad \text{for every training example } i,

with :math:`w = 0` by default (the pure feasibility problem of the paper). There is one multiplier per
example, held by an :class:`~cooper_like.multipliers.IndexedMultiplier`: a mini-batch observes only its
own examples' rows, so a step costs :math:`O(\text{batch})` however many examples there are. The
multipliers start at ``multiplier_init`` (1 by default: the first steps are plain empirical-risk
minimisation) and then grow on the examples that stay above :math:`\epsilon` and shrink to 0 on the
others, re-weighting the loss towards the hard examples.

On a batch :math:`B`, the model is driven by the mini-batch estimate of the Lagrangian,
:math:`\frac{1}{|B|} \sum_{i \in B} \lambda_i (\ell_i - \epsilon)`, so the ``violation`` given to the
library is :math:`(\ell_i - \epsilon) / |B|`; the multipliers receive the unscaled
:math:`\ell_i - \epsilon` as ``strict_violation``, so their step does not depend on the batch size.
"""

from __future__ import annotations

import torch
from torch import nn

import cooper_like as cooper

__all__ = ["FeasibleLearning"]


class FeasibleLearning(cooper.ConstrainedMinimizationProblem):
    """Per-example constraints ``cross_entropy_i <= epsilon`` with one multiplier per example.

    Args:
        model: A classifier mapping ``(n, ...)`` inputs to ``(n, classes)`` logits.
        num_examples: Number of training examples (rows of the multiplier); example ids are ``0..n-1``.
        epsilon: The per-example loss bound, > 0.
        objective_weight: Weight :math:`w \\ge 0` of the average loss in the objective (0: pure feasibility).
        multiplier_init: Initial value of every multiplier (>= 0).
        sparse_grad: Sparse multiplier gradients (O(batch) dual steps with SGD and nuPI).
    """

    def __init__(
        self,
        model: nn.Module,
        num_examples: int,
        epsilon: float,
        objective_weight: float = 0.0,
        multiplier_init: float = 1.0,
        sparse_grad: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        if not objective_weight >= 0:
            raise ValueError(f"objective_weight must be >= 0, got {objective_weight!r}")
        if not multiplier_init >= 0:
            raise ValueError(f"multiplier_init must be >= 0, got {multiplier_init!r}")
        self.model = model
        self.epsilon = float(epsilon)
        self.objective_weight = float(objective_weight)
        multiplier = cooper.multipliers.IndexedMultiplier(
            init=torch.full((num_examples,), float(multiplier_init)), sparse_grad=sparse_grad
        )
        self.per_example_loss = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=multiplier)

    def compute_cmp_state(
        self, inputs: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor
    ) -> cooper.CMPState:
        """Objective and the observed per-example constraints of a batch.

        Args:
            inputs: The batch's inputs.
            labels: ``(b,)`` integer class labels.
            indices: ``(b,)`` ids (``torch.long``) of the batch's examples in the training set.
        """
        logits = self.model(inputs)
        losses = nn.functional.cross_entropy(logits, labels, reduction="none")
        loss = self.objective_weight * losses.mean()
        gaps = losses - self.epsilon
        state = cooper.ConstraintState(
            violation=gaps / losses.numel(),
            constraint_features=indices,
            strict_violation=gaps.detach(),
        )
        return cooper.CMPState(
            loss=loss,
            observed_constraints={self.per_example_loss: state},
            misc={"losses": losses.detach(), "logits": logits.detach()},
        )
