"""The rate toolkit on hand-computed toy batches: kinds, proxies, parity/bound constraints, metrics, groups, choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import cooper_like as cooper
from problems.common.rates.candidates import (
    CandidateRun,
    build_dual_optimizer,
    build_primal_optimizer,
    feature_major,
)
from problems.common.rates.constraints import RateBound, RateParity, parity_weights
from problems.common.rates.data import LabeledSplit, RateDataset, validation_split
from problems.common.rates.groups import GroupError, GroupSpec, check_groups_nonempty
from problems.common.rates.kinds import RateKind
from problems.common.rates.metrics import group_rates, overall_rate, rate_report, rate_weights
from problems.common.rates.models import PiecewiseLinearBins, build_scorer
from problems.common.rates.proxies import indicator_proxy, signed_indicator_sums, true_indicator
from problems.common.rates.selection import Candidate, best_candidate, best_mixture, choose
from problems.fairness.problem import FairClassification
from problems.fairness.train import parity_violations, split_rate_weights
from problems.scaffold.loop import LoopSettings, fit

# Toy batch: groups A = examples 0-2, B = examples 3-5; predictions (score > 0) = [1, 0, 1, 0, 1, 0].
SCORES = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0, -0.5])
LABELS = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
MEMBERSHIP = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
PREDICTIONS = (SCORES > 0).double()

# By hand: rate in A, rate in B, rate overall.
EXPECTED = {
    RateKind.POSITIVE_PREDICTION: (2 / 3, 1 / 3, 1 / 2),
    RateKind.TRUE_POSITIVE: (1 / 2, 1.0, 2 / 3),
    RateKind.FALSE_POSITIVE: (1.0, 0.0, 1 / 3),
    RateKind.FALSE_NEGATIVE: (1 / 2, 0.0, 1 / 3),
    RateKind.ERROR: (2 / 3, 0.0, 1 / 3),
}


class FixedScores(nn.Module):
    """A 'model' whose scores are its parameters (the inputs only give the batch size)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores.clone())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.scores[: inputs.shape[0]]


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_true_rates_match_hand_computed_values(kind: RateKind) -> None:
    in_a, in_b, overall = EXPECTED[kind]
    rates = group_rates(kind, PREDICTIONS, LABELS, MEMBERSHIP)
    assert rates.tolist() == pytest.approx([in_a, in_b])
    assert overall_rate(kind, PREDICTIONS, LABELS) == pytest.approx(overall)


def test_parity_weights_reproduce_rate_gaps() -> None:
    for kind, (in_a, in_b, overall) in EXPECTED.items():
        weights, observed = parity_weights(kind, LABELS, MEMBERSHIP)
        _, true_gaps = signed_indicator_sums(weights, SCORES, _signs(kind), "sigmoid", 1.0)
        assert observed.tolist() == [True, True]
        assert true_gaps.tolist() == pytest.approx([in_a - overall, in_b - overall], abs=1e-6)


def _signs(kind: RateKind) -> torch.Tensor:
    from problems.common.rates.kinds import indicator_signs

    return indicator_signs(kind, LABELS)


def test_report_metrics_and_both_epsilon_semantics() -> None:
    report = rate_report(PREDICTIONS, LABELS, MEMBERSHIP)
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["dp_difference"] == pytest.approx(1 / 3)
    assert report["tpr_difference"] == pytest.approx(1 / 2)
    assert report["fpr_difference"] == pytest.approx(1.0)
    assert report["eo_difference"] == pytest.approx(1.0)
    assert report["dp_max_deviation"] == pytest.approx(1 / 6)  # max |r_g - r|, what epsilon bounds
    assert report["eo_max_deviation"] == pytest.approx(2 / 3)
    # A randomized classifier: expected rates are linear in the probabilities.
    half = rate_report(0.5 * PREDICTIONS, LABELS, MEMBERSHIP)
    assert half["dp_difference"] == pytest.approx(1 / 6)


def test_rate_weights_give_the_group_rates_and_the_parity_violations() -> None:
    probability = torch.tensor([0.9, 0.0, 1.0, 0.25, 1.0, 0.0], dtype=torch.float64)
    split = LabeledSplit(torch.zeros(6, 1), LABELS, MEMBERSHIP)
    weights = split_rate_weights([RateKind.TRUE_POSITIVE, RateKind.FALSE_POSITIVE], split)
    for kind, matrix in weights.items():
        assert matrix.shape == (3, 6) and matrix.dtype == torch.float64
        rates = matrix @ probability
        assert torch.allclose(rates[:2], group_rates(kind, probability, LABELS, MEMBERSHIP))
        assert float(rates[2]) == pytest.approx(overall_rate(kind, probability, LABELS))
    cached = parity_violations("equalized-odds", 0.05, probability, split, weights)
    assert np.allclose(cached, parity_violations("equalized-odds", 0.05, probability, split))
    gap = 0.45 - (0.9 + 1.0) / 3  # TPR of group A minus the overall TPR
    assert cached[:2] == pytest.approx([gap - 0.05, -gap - 0.05])
    no_positive_in_b = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    empty = rate_weights(RateKind.TRUE_POSITIVE, labels, no_positive_in_b)
    assert bool(torch.isnan(empty[1]).all()) and not bool(torch.isnan(empty[0]).any())


def test_feature_major_layout_keeps_the_values_and_the_scores() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(50, 7)
    columns = feature_major(inputs)
    assert columns.stride() == (1, 50) and torch.equal(columns, inputs)
    vector = torch.randn(5)
    assert feature_major(vector) is vector
    layer = nn.Linear(7, 1)
    assert torch.allclose(layer(columns), layer(inputs), atol=1e-6)


def test_logistic_scorer_starts_at_zero_and_the_mlp_at_random() -> None:
    logistic = build_scorer("logistic", 4)
    assert all(not bool(parameter.any()) for parameter in logistic.parameters())
    assert logistic(torch.randn(3, 4)).tolist() == [0.0, 0.0, 0.0]
    assert any(bool(parameter.any()) for parameter in build_scorer("mlp", 4, hidden=3).parameters())


def test_piecewise_linear_bins_encode_numerical_columns_and_the_spike() -> None:
    torch.manual_seed(0)
    spiky = torch.where(torch.rand(400) < 0.9, torch.zeros(400), 1.0 + 9.0 * torch.rand(400))
    smooth = torch.randn(400)
    onehot = (torch.rand(400) < 0.3).float()
    inputs = torch.stack([spiky, onehot, smooth], dim=1)
    encoding = PiecewiseLinearBins(inputs, bins=4)
    assert encoding.columns.tolist() == [0] * 5 + [2] * 4  # the spike's interval + 4, none for one-hot
    assert encoding.num_outputs == 3 + 9
    encoded = encoding(inputs)
    assert torch.equal(encoded[:, :3], inputs)
    assert bool(((encoded[:, 3:] >= 0) & (encoded[:, 3:] <= 1)).all())
    zero_rows = spiky == 0
    assert not bool(encoded[zero_rows, 3:8].any())  # the usual value: every spike interval at 0
    assert bool((encoded[~zero_rows, 3] == 1).all())  # any other value: the first interval full
    feature_columns = feature_major(inputs)
    assert torch.equal(encoding(feature_columns), encoded)
    mlp = build_scorer("mlp", 3, hidden=5, numeric_bins=4, train_inputs=inputs)
    assert mlp(inputs).shape == (400,)
    with pytest.raises(ValueError, match="training inputs"):
        build_scorer("mlp", 3, numeric_bins=4)
    with pytest.raises(ValueError, match="bins must be >= 1, got 0"):
        PiecewiseLinearBins(inputs, bins=0)
    with pytest.raises(ValueError, match=r"train_inputs must be a non-empty \(n, d\) matrix, got \(400,\)"):
        PiecewiseLinearBins(smooth, bins=4)
    with pytest.raises(ValueError, match=r"got \(0, 3\)"):
        PiecewiseLinearBins(inputs[:0], bins=4)


def test_tie_at_zero_counts_as_negative_prediction_in_every_rate() -> None:
    scores = torch.zeros(4)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    signs = torch.tensor([1.0, 1.0, -1.0, -1.0])
    assert true_indicator(scores, signs).tolist() == [0.0, 0.0, 1.0, 1.0]
    error = RateKind.ERROR
    weights = torch.full((1, 4), 0.25)
    from problems.common.rates.kinds import indicator_signs

    _, true_error = signed_indicator_sums(weights, scores, indicator_signs(error, labels))
    assert float(true_error[0]) == pytest.approx(0.5)  # the two positives are missed


def test_sigmoid_proxy_is_the_smooth_rate_and_hinge_bounds_it_from_above() -> None:
    torch.manual_seed(0)
    scores = torch.randn(50) * 3
    signs = torch.where(torch.rand(50) < 0.5, -1.0, 1.0)
    weights = torch.randn(7, 50) / 50
    sigmoid, true = signed_indicator_sums(weights, scores, signs, "sigmoid", 0.7)
    manual = weights @ torch.sigmoid(scores * signs / 0.7)
    assert torch.allclose(sigmoid, manual, atol=1e-6)
    hinge, true_again = signed_indicator_sums(weights, scores, signs, "hinge", 0.7)
    assert torch.equal(true, true_again)
    assert bool((hinge >= true - 1e-6).all())
    assert indicator_proxy(torch.tensor([0.0]), "hinge").item() == 1.0
    with pytest.raises(ValueError, match="temperature"):
        indicator_proxy(scores, "sigmoid", 0.0)
    with pytest.raises(ValueError, match="proxy"):
        indicator_proxy(scores, "relu")  # type: ignore[arg-type]


def test_parity_state_proxy_drives_the_model_true_rate_drives_the_multiplier() -> None:
    epsilon = 0.05
    model = FixedScores(SCORES)
    problem = FairClassification(model, "demographic-parity", 2, epsilon, "sigmoid", 1.0)
    constraint = problem.demographic_parity
    multiplier = constraint.multiplier
    assert isinstance(multiplier, cooper.multipliers.IndexedMultiplier)
    with torch.no_grad():
        multiplier.weight.copy_(torch.tensor([[0.3], [0.0], [0.0], [0.7]]))
    state = problem.compute_cmp_state(torch.zeros(6, 1), LABELS, MEMBERSHIP)
    observed = state.observed_constraints[constraint]
    gaps = EXPECTED[RateKind.POSITIVE_PREDICTION]
    true_gap_a, true_gap_b = gaps[0] - gaps[2], gaps[1] - gaps[2]
    expected_strict = torch.tensor([true_gap_a, -true_gap_a, true_gap_b, -true_gap_b]) - epsilon
    assert torch.allclose(observed.strict_violation, expected_strict, atol=1e-6)
    assert observed.constraint_features.tolist() == [0, 1, 2, 3]

    # Dual side: the multiplier's gradient is exactly the true-rate violation.
    dual = state.compute_dual_lagrangian()
    dual.backward()
    assert torch.allclose(multiplier.weight.grad.to_dense().reshape(-1), expected_strict, atol=1e-6)

    # Primal side: the model's gradient is that of BCE + sum_k lambda_k * (proxy gap_k - epsilon).
    primal = state.compute_primal_lagrangian()
    primal.backward()
    scores = SCORES.clone().requires_grad_(True)
    bce = nn.functional.binary_cross_entropy_with_logits(scores, LABELS)
    smooth = torch.sigmoid(scores)
    gap_a = smooth[:3].mean() - smooth.mean()
    gap_b = smooth[3:].mean() - smooth.mean()
    manual = bce + 0.3 * (gap_a - epsilon) + 0.7 * (-gap_b - epsilon)
    manual.backward()
    assert torch.allclose(model.scores.grad, scores.grad, atol=1e-6)


def test_true_violation_does_not_depend_on_the_temperature() -> None:
    low = RateParity(RateKind.TRUE_POSITIVE, 2, 0.01, "sigmoid", 0.1).measure(SCORES, LABELS, MEMBERSHIP)
    high = RateParity(RateKind.TRUE_POSITIVE, 2, 0.01, "sigmoid", 10.0).measure(SCORES, LABELS, MEMBERSHIP)
    assert low.state is not None and high.state is not None
    assert torch.equal(low.state.strict_violation, high.state.strict_violation)
    assert not torch.allclose(low.state.violation, high.state.violation)


def test_group_empty_in_a_batch_is_skipped_and_counted() -> None:
    parity = RateParity(RateKind.TRUE_POSITIVE, 2, 0.01)
    no_positive_in_b = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    measurement = parity.measure(SCORES, labels, no_positive_in_b)
    assert measurement.skipped == 1 and parity.skipped == 1
    assert measurement.state is not None
    assert measurement.state.constraint_features.tolist() == [0, 1]  # only group A's two rows
    assert math.isnan(float(measurement.true_gaps[1]))
    nobody_positive = parity.measure(SCORES, torch.zeros(6), MEMBERSHIP)
    assert nobody_positive.state is None and parity.skipped == 3


def test_rate_bound_state_and_skip() -> None:
    bound = RateBound(RateKind.FALSE_POSITIVE, 0.1)
    state = bound.measure(SCORES, LABELS)
    assert state is not None
    assert float(state.strict_violation) == pytest.approx(1 / 3 - 0.1)
    assert bound.measure(SCORES, torch.ones(6)) is None and bound.skipped == 1
    with pytest.raises(ValueError, match="bound"):
        RateBound(RateKind.FALSE_POSITIVE, 1.5)


@pytest.mark.parametrize("epsilon", [0.0, -0.1, float("nan")])
def test_non_positive_epsilon_is_rejected(epsilon: float) -> None:
    with pytest.raises(ValueError, match="epsilon must be a number > 0"):
        RateParity(RateKind.POSITIVE_PREDICTION, 2, epsilon)
    with pytest.raises(ValueError, match="epsilon"):
        FairClassification(FixedScores(SCORES), "demographic-parity", 2, epsilon)


def test_groups_intersectional_marginal_and_unknown_attribute() -> None:
    table = {
        "sex": np.array(["F", "M", "F", "M"]),
        "race": np.array(["x", "x", "y", "y"]),
    }
    joint = GroupSpec.from_columns([table], ["sex", "race"])
    assert joint.names == ["sex=F&race=x", "sex=F&race=y", "sex=M&race=x", "sex=M&race=y"]
    assert joint.membership(table).sum(dim=0).tolist() == [1, 1, 1, 1]
    marginal = GroupSpec.from_columns([table], ["sex", "race"], "marginal")
    assert marginal.names == ["sex=F", "sex=M", "race=x", "race=y"]
    assert marginal.partitions == [[0, 1], [2, 3]]
    assert marginal.membership(table).sum(dim=0).tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match=r"unknown sensitive attribute\(s\) \['age'\]"):
        GroupSpec.from_columns([table], ["age"])
    with pytest.raises(ValueError, match="repeat"):
        GroupSpec.from_columns([table], ["sex", "sex"])


def test_group_empty_in_a_whole_split_is_an_error_naming_it() -> None:
    names = ["sex=Female", "sex=Male"]
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    membership = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    check_groups_nonempty(membership, labels, names, [RateKind.POSITIVE_PREDICTION], "train")
    with pytest.raises(GroupError, match=r"'sex=Female' has no member with label 1 in the train split"):
        check_groups_nonempty(membership, labels, names, [RateKind.TRUE_POSITIVE], "train")
    empty = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    with pytest.raises(GroupError, match=r"'sex=Female' has no member in the test split"):
        check_groups_nonempty(empty, labels, names, [RateKind.POSITIVE_PREDICTION], "test")
    split = LabeledSplit(torch.zeros(4, 1), labels, membership)
    spec = GroupSpec(("sex",), "intersectional", ((("sex", "Female"),), (("sex", "Male"),)))
    dataset = RateDataset("toy", split, None, split, spec, ["x"])
    with pytest.raises(GroupError, match="false-positive"):
        dataset.check_groups([RateKind.FALSE_POSITIVE])


def test_validation_split_is_stratified_and_deterministic() -> None:
    labels = torch.tensor([0.0, 1.0] * 50)
    membership = torch.stack([torch.arange(100) < 30, torch.arange(100) >= 30])
    split = LabeledSplit(torch.arange(100.0).reshape(-1, 1), labels, membership)
    fitted, held_out = validation_split(split, 0.2, seed=3)
    _, held_again = validation_split(split, 0.2, seed=3)
    assert held_out is not None and held_again is not None
    assert fitted.num_examples == 80 and held_out.num_examples == 20
    assert torch.equal(held_out.x, held_again.x)
    assert int(held_out.membership[0].sum()) == 6  # 20% of each (group, label) cell
    assert validation_split(split, 0.0) == (split, None)


def test_best_candidate_prefers_feasible_then_least_violating() -> None:
    objectives = [0.10, 0.20, 0.15, 0.30]
    violations = [[0.05], [-0.01], [-0.02], [-0.5]]
    assert best_candidate(objectives, violations) == (2, True)
    assert best_candidate([0.1, 0.2], [[0.3], [0.1]]) == (1, False)
    with pytest.raises(ValueError, match="no candidates"):
        best_candidate([], [])


def test_mixture_is_m_plus_one_sparse_and_makes_the_constraint_tight() -> None:
    objectives = [0.10, 0.30, 0.40, 0.12, 0.50]
    violations = [[0.20], [-0.20], [-0.30], [0.25], [-0.1]]
    probabilities, feasible = best_mixture(objectives, violations)
    assert feasible
    assert probabilities.sum() == pytest.approx(1.0)
    assert np.count_nonzero(probabilities) <= 2  # m + 1 with m = 1 constraint
    assert probabilities @ np.array(violations)[:, 0] == pytest.approx(0.0, abs=1e-9)
    assert probabilities @ np.array(objectives) == pytest.approx(0.2)  # 1/2 of #0 and 1/2 of #1
    infeasible, ok = best_mixture([0.1, 0.2], [[0.3, 0.1], [0.1, 0.3]])
    assert not ok
    assert infeasible.tolist() == pytest.approx([0.5, 0.5])  # minimises the largest violation


def test_choose_modes_and_description() -> None:
    candidates = [
        Candidate(10, 0.10, np.array([0.2]), {}),
        Candidate(20, 0.30, np.array([-0.2]), {}),
        Candidate(30, 0.25, np.array([0.1]), {}),
    ]
    best = choose(candidates, "best-feasible")
    assert best.indices == [1] and best.feasible
    assert choose(candidates, "last").indices == [2]
    mixture = choose(candidates, "mixture")
    assert mixture.mode == "mixture" and len(mixture.indices) <= 2
    assert mixture.describe(candidates)["kind"] == "mixture"
    assert choose(candidates[:1], "best-feasible").describe(candidates[:1])["kind"] == "least-violating"
    with pytest.raises(ValueError, match="selection mode"):
        choose(candidates, "oracle")  # type: ignore[arg-type]


def test_candidate_run_batches_rows_and_candidates_on_the_shared_loop() -> None:
    torch.manual_seed(0)
    inputs, labels = torch.randn(40, 3), (torch.arange(40) % 2).float()
    membership = torch.stack([torch.arange(40) < 20, torch.arange(40) >= 20])
    split = LabeledSplit(inputs, labels, membership)
    spec = GroupSpec(("sex",), "intersectional", ((("sex", "Female"),), (("sex", "Male"),)))
    data = RateDataset("toy", split, None, split, spec, ["a", "b", "c"])

    def measure(probability: torch.Tensor, split: LabeledSplit) -> tuple[float, np.ndarray]:
        return float((probability - split.y).abs().mean()), np.array([-1.0])

    def run(batch_size: int, epochs: int, log_every: int) -> CandidateRun:
        model = build_scorer("logistic", 3)
        problem = FairClassification(model, "demographic-parity", 2, epsilon=0.05)
        primal = build_primal_optimizer(model.parameters(), lr=0.1)
        dual = build_dual_optimizer("sgd", problem.dual_parameters(), lr=0.1)
        optimizer = cooper.optim.SimultaneousOptimizer(problem, primal, dual)
        task = CandidateRun(problem, optimizer, model, data, epochs, batch_size, measure)
        fit(task, LoopSettings(seed=0, batch_size=batch_size, log_every=log_every, show_progress=False))
        return task

    full = run(batch_size=100, epochs=5, log_every=2)
    assert [candidate.step for candidate in full.candidates] == [2, 4, 5]  # every 2 steps and the last
    assert full.batch(torch.arange(40)) is full.full and full.full["inputs"].stride() == (1, 40)
    mini = run(batch_size=16, epochs=2, log_every=4)  # 3 batches per epoch: 16, 16, 8
    assert [candidate.step for candidate in mini.candidates] == [4, 6]
    assert mini.candidates[-1].metrics["epoch"] == 2 and mini.full["inputs"].stride() == (3, 1)
    half = mini.batch(torch.arange(0, 40, 2))
    assert torch.equal(half["inputs"], inputs[::2]) and half["membership"].shape == (2, 20)
    assert {"train_batch_loss", "selection_objective", "batch_max_violation/demographic_parity"} <= set(
        mini.candidates[0].metrics
    )
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        CandidateRun(full.problem, full.optimizer, full.model, data, 0, 8, measure)
