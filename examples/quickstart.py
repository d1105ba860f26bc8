"""Quickstart: least squares under a norm constraint, solved with gradient descent-ascent."""

import torch

import cooper_like as cooper

torch.manual_seed(0)
features, targets = torch.randn(256, 10), torch.randn(256)


class NormConstrainedRegression(cooper.ConstrainedMinimizationProblem):
    """min_w mean((Xw - y)^2)  subject to  ||w||^2 <= 0.01."""

    def __init__(self) -> None:
        super().__init__()
        multiplier = cooper.multipliers.DenseMultiplier(num_constraints=1)
        self.norm = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=multiplier)

    def compute_cmp_state(self, weights: torch.Tensor) -> cooper.CMPState:
        loss = (features @ weights - targets).pow(2).mean()
        violation = weights.pow(2).sum() - 0.01
        return cooper.CMPState(loss=loss, observed_constraints={self.norm: cooper.ConstraintState(violation)})


weights = torch.zeros(10, requires_grad=True)
problem = NormConstrainedRegression()
optimizer = cooper.optim.SimultaneousOptimizer(
    cmp=problem,
    primal_optimizers=torch.optim.SGD([weights], lr=0.05),
    dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
)
for _ in range(1000):
    roll_out = optimizer.roll(compute_cmp_state_kwargs={"weights": weights})

norm_squared = weights.detach().pow(2).sum().item()
multiplier = problem.norm.multiplier.weight.item()
print(
    f"loss {roll_out.loss.item():.4f}  ||w||^2 {norm_squared:.4f} (bound 0.01)  multiplier {multiplier:.4f}"
)
assert abs(norm_squared - 0.01) < 1e-3 and multiplier > 0
