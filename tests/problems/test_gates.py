"""Tests of the hard-concrete gate and its kernels."""

from __future__ import annotations

import math

import pytest
import torch

from problems.sparsity.gates import (
    HardConcreteGate,
    hard_concrete_median,
    hard_concrete_prob_nonzero,
    hard_concrete_sample,
    hard_concrete_test_gate,
)

LN11 = math.log(11.0)


def _set_log_alpha(gate: HardConcreteGate, values: list[float] | list[list[float]]) -> None:
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor(values, dtype=gate.log_alpha.dtype))


def test_prob_nonzero_matches_monte_carlo_within_one_percent() -> None:
    log_alpha = torch.tensor([-1.5, -0.5, 0.0, 0.7, 2.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(1234)
    n = 400_000
    u = torch.rand(n, log_alpha.numel(), generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    z = hard_concrete_sample(log_alpha, u)
    empirical = (z > 0).double().mean(dim=0)
    expected = hard_concrete_prob_nonzero(log_alpha)
    torch.testing.assert_close(empirical, expected, rtol=0.01, atol=0.0)
    # Expected L0 norm of the whole gate vector: sum of the probabilities.
    expected_l0 = float(expected.sum())
    assert abs(float((z > 0).double().sum(dim=1).mean()) - expected_l0) < 0.01 * expected_l0


def test_prob_nonzero_closed_form() -> None:
    # P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)) = sigmoid(log_alpha + (2/3) ln 11).
    log_alpha = torch.tensor([-3.0, 0.0, 1.0])
    expected = torch.sigmoid(log_alpha + (2.0 / 3.0) * LN11)
    torch.testing.assert_close(hard_concrete_prob_nonzero(log_alpha), expected)
    # Other hyper-parameters: beta = 1, gamma = -0.5, zeta = 1.5 -> sigmoid(log_alpha + ln 3).
    torch.testing.assert_close(
        hard_concrete_prob_nonzero(log_alpha, beta=1.0, gamma=-0.5, zeta=1.5),
        torch.sigmoid(log_alpha + math.log(3.0)),
    )


def test_sample_formula_on_hand_values() -> None:
    # u = 1/2 gives zero logistic noise: s = sigmoid(log_alpha / beta).
    log_alpha = torch.tensor([0.0, 10.0, -10.0, 0.2])
    z = hard_concrete_sample(log_alpha, torch.full((4,), 0.5))
    s = torch.sigmoid(torch.tensor(0.2) / (2.0 / 3.0))
    torch.testing.assert_close(
        z, torch.stack([torch.tensor(0.5), torch.tensor(1.0), torch.tensor(0.0), s * 1.2 - 0.1])
    )


def test_test_gate_formula_and_threshold_minus_ln11() -> None:
    log_alpha = torch.tensor([0.0, 1.0, 50.0, -50.0, -LN11 + 1e-3, -LN11 - 1e-3], dtype=torch.float64)
    z_hat = hard_concrete_test_gate(log_alpha)
    assert z_hat[0].item() == pytest.approx(0.5)
    assert z_hat[1].item() == pytest.approx(1.2 / (1 + math.exp(-1.0)) - 0.1)
    assert z_hat[2].item() == 1.0
    assert z_hat[3].item() == 0.0
    assert z_hat[4].item() > 0.0
    assert z_hat[5].item() == 0.0
    # sigmoid(-ln 11) = 1/12 = -gamma / (zeta - gamma): the threshold itself maps to 0.
    threshold = 1 / (1 + 11)
    assert abs(threshold * 1.2 - 0.1) < 1e-15


def test_median_gate_and_its_active_rule() -> None:
    log_alpha = torch.tensor([0.0, 1.0, -1.0, -2.0])
    beta = 2.0 / 3.0
    expected = torch.clamp(torch.sigmoid(log_alpha / beta) * 1.2 - 0.1, 0, 1)
    torch.testing.assert_close(hard_concrete_median(log_alpha), expected)
    # The median really is the median: half of the samples lie below it.
    generator = torch.Generator().manual_seed(0)
    u = torch.rand(200_000, 1, generator=generator)
    z = hard_concrete_sample(torch.tensor([0.7]), u)
    assert float((z <= hard_concrete_median(torch.tensor([0.7]))).float().mean()) == pytest.approx(
        0.5, abs=0.01
    )

    gate = HardConcreteGate(6, init_noise=0.0)
    _set_log_alpha(gate, [0.5, 1e-3, -1e-3, -1.0, -2.0, -3.0])
    assert gate.median_active_mask().tolist() == [True, True, False, False, False, False]
    assert gate.active_mask().tolist() == [True, True, True, True, True, False]
    assert gate.median_active_fraction() == pytest.approx(2 / 6)
    assert gate.active_fraction() == pytest.approx(5 / 6)


def test_active_mask_agrees_with_test_gate_near_threshold() -> None:
    gate = HardConcreteGate(4, init_noise=0.0)
    _set_log_alpha(gate, [-LN11 + 1e-3, -LN11 - 1e-3, -LN11 + 1e-5, -LN11 - 1e-5])
    assert gate.active_mask().tolist() == (gate.test_gate() > 0).tolist()
    assert gate.active_mask()[:2].tolist() == [True, False]


def test_init_log_alpha() -> None:
    gate = HardConcreteGate((3, 4), droprate_init=0.3, init_noise=0.0)
    assert gate.log_alpha.shape == (3, 4)
    torch.testing.assert_close(gate.log_alpha.detach(), torch.full((3, 4), math.log(0.7) - math.log(0.3)))
    torch.manual_seed(0)
    noisy = HardConcreteGate(10_000, droprate_init=0.2, init_noise=0.01)
    mean = math.log(0.8) - math.log(0.2)
    assert float(noisy.log_alpha.detach().mean()) == pytest.approx(mean, abs=1e-3)
    assert float(noisy.log_alpha.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert noisy.num_gates == 10_000


def test_eval_mode_is_deterministic_and_train_mode_samples() -> None:
    torch.manual_seed(0)
    gate = HardConcreteGate(50)
    gate.eval()
    first, second = gate(), gate()
    assert torch.equal(first, second)
    torch.testing.assert_close(first, hard_concrete_test_gate(gate.log_alpha))
    gate.train()
    a, b = gate(), gate()
    assert not torch.equal(a, b)
    assert bool(((a >= 0) & (a <= 1)).all())


def test_sample_uses_generator() -> None:
    gate = HardConcreteGate(20)
    a = gate.sample(torch.Generator().manual_seed(5))
    b = gate.sample(torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_gradients_reach_log_alpha_through_sample_and_prob_nonzero() -> None:
    torch.manual_seed(0)
    gate = HardConcreteGate(30, droprate_init=0.5)
    gate.sample().sum().backward()
    assert gate.log_alpha.grad is not None
    assert bool((gate.log_alpha.grad != 0).any())
    gate.log_alpha.grad = None
    gate.expected_density().backward()
    grad = gate.log_alpha.grad
    assert grad is not None
    p = hard_concrete_prob_nonzero(gate.log_alpha.detach())
    torch.testing.assert_close(grad, p * (1 - p) / 30)


def test_log_alpha_is_never_clamped() -> None:
    gate = HardConcreteGate(3, init_noise=0.0)
    _set_log_alpha(gate, [-20.0, -8.0, 30.0])
    gate.eval()
    gate()
    gate.train()
    gate.sample()
    assert gate.log_alpha.detach().tolist() == [-20.0, -8.0, 30.0]
    # Densities far below the 4.7% floor a clamp at log(0.01) would impose are reachable ...
    assert float(gate.prob_nonzero().detach()[0]) < 1e-6
    # ... and the expected density still has a gradient there.
    gate.expected_density().backward()
    assert gate.log_alpha.grad is not None
    assert float(gate.log_alpha.grad[0]) > 0


def test_expected_density_is_mean_prob() -> None:
    gate = HardConcreteGate((2, 2), init_noise=0.0)
    _set_log_alpha(gate, [[0.0, 1.0], [-1.0, 2.0]])
    torch.testing.assert_close(gate.expected_density(), gate.prob_nonzero().mean())


def test_extra_repr_names_hyperparameters() -> None:
    assert "droprate_init=0.5" in repr(HardConcreteGate(2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": 0}, "shape must be a positive int"),
        ({"shape": (2, -1)}, r"shape must be .*\(2, -1\)"),
        ({"shape": ()}, "shape must be"),
        ({"shape": 2, "droprate_init": 0.0}, "droprate_init must lie in"),
        ({"shape": 2, "droprate_init": 1.0}, "droprate_init must lie in"),
        ({"shape": 2, "droprate_init": "x"}, "droprate_init must be a finite number"),
        ({"shape": 2, "beta": 0.0}, "beta must be > 0, got 0.0"),
        ({"shape": 2, "beta": float("nan")}, "beta must be a finite number"),
        ({"shape": 2, "gamma": 0.1}, "gamma must be < 0, got 0.1"),
        ({"shape": 2, "zeta": 1.0}, "zeta must be > 1, got 1.0"),
        ({"shape": 2, "init_noise": -1.0}, "init_noise must be >= 0, got -1.0"),
        ({"shape": 2, "eps": 0.5}, "eps must lie in"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HardConcreteGate(**kwargs)  # type: ignore[arg-type]
