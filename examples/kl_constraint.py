"""A policy that maximises reward while staying within a KL budget of a reference policy."""

import torch
from torch.nn.functional import log_softmax

import cooper_like as cooper

STEPS = 500
DELTA = 0.1  # the KL budget, in nats
torch.manual_seed(0)
num_contexts, num_features, num_actions = 4096, 8, 6
contexts = torch.randn(num_contexts, num_features)
reward_weights = torch.randn(num_actions, num_features)  # reward r(x, a) = (R x)_a
rewards = contexts @ reward_weights.T
reference = torch.nn.Linear(num_features, num_actions, bias=False)  # the reference policy pi_ref
with torch.no_grad():
    reference_log_probs = log_softmax(reference(contexts), dim=-1)


class KLConstrainedPolicy(cooper.ConstrainedMinimizationProblem):
    """max E_x E_{a~pi(.|x)} r(x, a)  subject to  E_x KL(pi(.|x) || pi_ref(.|x)) <= DELTA."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = cooper.multipliers.DenseMultiplier(num_constraints=1)  # the KL coefficient, learned
        self.kl = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=self.beta)

    def compute_cmp_state(self, policy: torch.nn.Module, ids: torch.Tensor) -> cooper.CMPState:
        log_probs = log_softmax(policy(contexts[ids]), dim=-1)
        probs = log_probs.exp()
        expected_reward = (probs * rewards[ids]).sum(-1).mean()
        kl = (probs * (log_probs - reference_log_probs[ids])).sum(-1).mean()
        return cooper.CMPState(
            loss=-expected_reward, observed_constraints={self.kl: cooper.ConstraintState(kl - DELTA)}
        )


policy = torch.nn.Linear(num_features, num_actions, bias=False)
policy.load_state_dict(reference.state_dict())  # start at the reference: KL = 0
problem = KLConstrainedPolicy()
optimizer = cooper.optim.SimultaneousOptimizer(
    cmp=problem,
    primal_optimizers=torch.optim.Adam(policy.parameters(), lr=1e-2),
    dual_optimizers=cooper.optim.nuPI(problem.dual_parameters(), lr=1.0, Kp=5.0, maximize=True),
)
for step in range(STEPS):
    ids = torch.randint(num_contexts, (256,), generator=torch.Generator().manual_seed(step))
    optimizer.roll(compute_cmp_state_kwargs={"policy": policy, "ids": ids})

with torch.no_grad():
    log_probs = log_softmax(policy(contexts), dim=-1)
    kl = (log_probs.exp() * (log_probs - reference_log_probs)).sum(-1).mean().item()
    reward = (log_probs.exp() * rewards).sum(-1).mean().item()
    reference_reward = (reference_log_probs.exp() * rewards).sum(-1).mean().item()
    best_reward = rewards.max(-1).values.mean().item()
beta = problem.beta.weight.item()
print(
    f"KL {kl:.4f} (budget {DELTA}), reward {reward:.3f} (reference {reference_reward:.3f}, greedy {best_reward:.3f}), multiplier {beta:.3f}"
)
# The KL-regularised optimum for the coefficient beta is pi* ∝ pi_ref exp(r / beta), i.e. W* = W_ref + R / beta
with torch.no_grad():
    closed_form = reference.weight + reward_weights / beta
    gap = policy.weight - closed_form
    # softmax ignores a shift shared by every action: compare the weights centred over the actions
    err = (gap - gap.mean(0)).norm() / (closed_form - closed_form.mean(0)).norm()
print(f"distance to the closed form W_ref + R / multiplier: {100 * err:.1f}%")
assert abs(kl - DELTA) < 0.01 and err < 0.05
