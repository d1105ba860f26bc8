"""A script written for Cooper 1.0 (its README example, made concrete) runs with ``import cooper_like as cooper``."""

from __future__ import annotations

import torch

import cooper_like as cooper

DEVICE = "cpu"
NUM_EPOCHS = 60


class MyCMP(cooper.ConstrainedMinimizationProblem):
    """Logistic regression whose mean predicted probability must stay below 0.3."""

    def __init__(self) -> None:
        super().__init__()
        multiplier = cooper.multipliers.DenseMultiplier(num_constraints=1, device=DEVICE)
        # By default, constraints are built using `formulation_type=cooper.formulations.Lagrangian`
        self.constraint = cooper.Constraint(
            multiplier=multiplier, constraint_type=cooper.ConstraintType.INEQUALITY
        )

    def compute_cmp_state(self, model, inputs, targets):
        inputs, targets = inputs.to(DEVICE), targets.to(DEVICE)
        logits = model(inputs).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        constraint_state = cooper.ConstraintState(violation=torch.sigmoid(logits).mean() - 0.3)
        observed_constraints = {self.constraint: constraint_state}

        return cooper.CMPState(loss=loss, observed_constraints=observed_constraints)


def test_cooper_readme_script_runs_and_converges() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 4, generator=generator)
    targets = (inputs[:, 0] + 0.5 * torch.randn(512, generator=generator) > -0.5).float()  # ~70% positives
    train_loader = [(inputs[i : i + 64], targets[i : i + 64]) for i in range(0, 512, 64)]
    model = torch.nn.Linear(4, 1).to(DEVICE)
    cmp = MyCMP()

    primal_optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Must set `maximize=True` since the Lagrange multipliers solve a _maximization_ problem
    dual_optimizer = torch.optim.SGD(cmp.dual_parameters(), lr=1e-1, maximize=True)

    cooper_optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=cmp, primal_optimizers=primal_optimizer, dual_optimizers=dual_optimizer
    )

    for epoch_num in range(NUM_EPOCHS):
        for inputs_batch, targets_batch in train_loader:
            compute_cmp_state_kwargs = {"model": model, "inputs": inputs_batch, "targets": targets_batch}
            roll_out = cooper_optimizer.roll(compute_cmp_state_kwargs=compute_cmp_state_kwargs)
        assert epoch_num >= 0 and roll_out.loss is not None

    with torch.no_grad():
        rate = torch.sigmoid(model(inputs).squeeze(1)).mean().item()
    assert abs(rate - 0.3) < 0.02, rate
    assert cmp.constraint.multiplier.weight.item() > 0.1
    # roll_out carries what Cooper's does
    assert set(roll_out._fields) == {"loss", "cmp_state", "primal_lagrangian_store", "dual_lagrangian_store"}
    assert cmp.constraint in roll_out.dual_lagrangian_store.multiplier_values
