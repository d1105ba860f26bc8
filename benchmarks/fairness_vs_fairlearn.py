"""Fair classification on Adult: ``cooper_like`` (one deterministic model) vs fairlearn's ExponentiatedGradient.

What is measured
    On UCI Adult (train 32,561 / test 16,281, sensitive attribute ``sex``, fairlearn's preprocessing:
    every column but ``sex`` and ``income`` is a feature, one-hot over train+test, standardised on
    train; implemented by ``problems.common.rates.adult.load_adult``), in one process and one thread
    (``torch.set_num_threads(1)`` and ``threadpoolctl`` limits for scikit-learn's BLAS):

    * fairlearn (optional dependency, ``pip install fairlearn==0.15.0``): an unmitigated
      ``LogisticRegression``, and ``ExponentiatedGradient(LogisticRegression(), constraint)`` with
      ``DemographicParity(difference_bound=eps)`` and ``EqualizedOdds(difference_bound=eps)``. Its
      predictions are those of ``predict(X, random_state=0)`` (a randomized mixture of fitted models).
    * ``cooper_like``: ``problems.fairness.train`` with the default configuration (logistic model
      starting at zero, 100 full-batch AdamW steps at lr 0.2, nuPI on the multipliers driven by the true
      rates with dual lr 1, best candidate chosen on the training data) and, for reference, the former
      default schedule (500 steps, lr 0.1, dual lr 0.2), for ``--seeds`` seeds; then the MLP with its
      defaults for demographic parity (64 ReLU units over a 16-bin piecewise-linear encoding of the
      numerical columns, see ``FairnessConfig``).

    Reported on the test set: accuracy, ``dp_difference`` / ``eo_difference`` (max - min over groups,
    fairlearn's ``demographic_parity_difference`` / ``equalized_odds_difference``; checked against
    fairlearn's functions on the same predictions) and the max deviation from the overall rate (what
    ``difference_bound`` bounds). Time ("fit s"): fairlearn's ``fit`` against our ``train`` from the
    configuration to the returned model (model and optimizers built, steps, candidate measurements and
    their log rows, the choice); data loading excluded in both, and the one-time imports paid before
    either clock starts (fairlearn's at its import, ours by a one-step warm-up run). "call s" is our
    whole ``train`` call, which also evaluates the test set and writes ``metrics.json``, ``model.pt``
    and three plots (reported, not judged: fairlearn's prediction and metrics are not timed either).
    fairlearn is fitted once per seed, interleaved with our runs of that seed (the machine may be
    shared: interleaving exposes both to the same load); ratio = median fairlearn time / median of
    ours, both on one thread (the verdict).
    One more fairlearn fit per criterion with scikit-learn's default BLAS/OpenMP thread pools is reported
    for information: on a shared machine oversubscribed thread pools can make it several times slower.

    ``--task neyman-pearson`` instead runs ``problems.rates.train_np`` for alpha in {0.05, 0.1} and
    compares it with the plug-in baseline: scikit-learn's ``LogisticRegression`` thresholded at the
    (1 - alpha) quantile of the training negatives' scores.

Targets (issue 4)
    logistic DP eps=0.01: test DP difference <= 0.015 with accuracy >= 0.833; logistic equalized odds
    eps=0.01: test EO difference <= 0.03 with accuracy >= 0.84; MLP DP: accuracy >= 0.840 at DP
    difference <= 0.015; training time <= 1/10 of fairlearn's; Neyman-Pearson: test FPR <= alpha + 0.01.

Command
    python benchmarks/fairness_vs_fairlearn.py [--seeds 0 1 2] [--no-mlp] [--out [PATH]]
    python benchmarks/fairness_vs_fairlearn.py --task neyman-pearson [--out [PATH]]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS_DIR, environment_lines, markdown_table, text_table, write_atomic

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from problems.common.rates.adult import load_adult  # noqa: E402
from problems.common.rates.data import RateDataset  # noqa: E402
from problems.common.rates.metrics import rate_report  # noqa: E402
from problems.fairness.config import FairnessConfig  # noqa: E402
from problems.fairness.train import train  # noqa: E402
from problems.rates.config import NeymanPearsonConfig  # noqa: E402
from problems.rates.train_np import train_neyman_pearson  # noqa: E402

EPSILON = 0.01
TARGETS = {
    "demographic-parity": {"key": "dp", "max_difference": 0.015, "min_accuracy": 0.833},
    "equalized-odds": {"key": "eo", "max_difference": 0.03, "min_accuracy": 0.84},
}
MLP_TARGET = {"max_difference": 0.015, "min_accuracy": 0.840}
TIME_RATIO_TARGET = 10.0
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "500 steps": {"epochs": 500, "lr": 0.1, "dual_lr": 0.2},
}
"""Our configurations: the defaults (100 full-batch steps), and the former default schedule for reference."""
JUDGED_RECIPE = "default"
"""The recipe whose times are held to the target; the others are reported for information."""


def thread_limits() -> Any:
    """One BLAS thread for scikit-learn/numpy (a no-op context when threadpoolctl is missing)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def fairlearn_available() -> tuple[Any, str]:
    try:
        import fairlearn
    except ImportError as exc:
        return None, f"fairlearn not importable ({exc}); install it with `pip install fairlearn==0.15.0`"
    return fairlearn, f"fairlearn {fairlearn.__version__}"


def sex_labels(membership: torch.Tensor, names: list[str]) -> np.ndarray:
    return np.array(names, dtype=object)[membership.numpy().argmax(axis=0)]


def run_fairlearn(data: RateDataset, criterion: str | None, one_thread: bool = True) -> dict[str, Any]:
    """Fit (timed) and evaluate fairlearn's unmitigated model or ExponentiatedGradient.

    ``one_thread=False`` leaves scikit-learn's BLAS/OpenMP thread pools at their defaults.
    """
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
    from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient
    from sklearn.linear_model import LogisticRegression

    x, y = data.train.x.numpy(), data.train.y.numpy().astype(int)
    x_test, y_test = data.test.x.numpy(), data.test.y.numpy().astype(int)
    groups = sex_labels(data.train.membership, data.groups.names)
    groups_test = sex_labels(data.test.membership, data.groups.names)
    with thread_limits() if one_thread else contextlib.nullcontext():
        started = time.perf_counter()
        if criterion is None:
            model: Any = LogisticRegression(max_iter=1000).fit(x, y)
            fit_time = time.perf_counter() - started
            predictions = model.predict(x_test)
            size = 1
        else:
            constraint = (
                DemographicParity(difference_bound=EPSILON)
                if criterion == "demographic-parity"
                else EqualizedOdds(difference_bound=EPSILON)
            )
            model = ExponentiatedGradient(LogisticRegression(max_iter=1000), constraint)
            model.fit(x, y, sensitive_features=groups)
            fit_time = time.perf_counter() - started
            predictions = model.predict(x_test, random_state=0)
            weights = np.asarray(model.weights_)
            size = int((weights > 0).sum())
    report = rate_report(torch.tensor(predictions, dtype=torch.float64), data.test.y, data.test.membership)
    check_dp = demographic_parity_difference(y_test, predictions, sensitive_features=groups_test)
    check_eo = equalized_odds_difference(y_test, predictions, sensitive_features=groups_test)
    if abs(check_dp - report["dp_difference"]) > 1e-9 or abs(check_eo - report["eo_difference"]) > 1e-9:
        raise AssertionError(
            f"metric definitions disagree with fairlearn: dp {report['dp_difference']} vs {check_dp}, "
            f"eo {report['eo_difference']} vs {check_eo}"
        )
    return {"report": report, "time": fit_time, "models": size}


def run_ours(data: RateDataset, seed: int, out: Path, **overrides: Any) -> dict[str, Any]:
    """Our run; ``call_s`` is the whole ``train`` call (``wall_time_s`` stops at the returned model)."""
    config = FairnessConfig(seed=seed, out=out, **overrides)
    started = time.perf_counter()
    metrics = train(config, data)
    return {**metrics, "call_s": time.perf_counter() - started}


def fairness_benchmark(args: argparse.Namespace) -> str:
    fairlearn, note = fairlearn_available()
    data = load_adult(("sex",), validation_fraction=0.0)
    scratch = Path(tempfile.mkdtemp(prefix="fairness_bench_"))
    rows: list[list[str]] = []
    verdicts: list[list[str]] = []
    notes = [note, f"epsilon = {EPSILON}", f"seeds: {args.seeds}"]

    def add_row(
        method: str,
        seed: str,
        report: dict[str, Any],
        seconds: float,
        extra: str = "",
        call_seconds: float | None = None,
    ) -> None:
        rows.append(
            [
                method,
                seed,
                f"{report['accuracy']:.4f}",
                f"{report['dp_difference']:.4f}",
                f"{report['eo_difference']:.4f}",
                f"{report['dp_max_deviation']:.4f}",
                f"{report['eo_max_deviation']:.4f}",
                f"{seconds:.2f}",
                "-" if call_seconds is None else f"{call_seconds:.2f}",
                extra,
            ]
        )

    if fairlearn is not None:
        print("fairlearn unmitigated ...", flush=True)
        base = run_fairlearn(data, None)
        add_row("fairlearn LogisticRegression (unmitigated)", "-", base["report"], base["time"])
    print("cooper_like warm-up (one step, untimed: imports of the logger and the plots) ...", flush=True)
    run_ours(data, 0, scratch / "warm-up", epochs=1)
    for criterion, target in TARGETS.items():
        baseline_times: list[float] = []
        times: dict[str, list[float]] = {recipe: [] for recipe in RECIPES}
        call_times: dict[str, list[float]] = {recipe: [] for recipe in RECIPES}
        passes: dict[str, list[bool]] = {recipe: [] for recipe in RECIPES}
        for round_index, seed in enumerate(args.seeds):  # fairlearn and ours interleaved, one round per seed
            if fairlearn is not None:
                print(f"fairlearn ExponentiatedGradient {criterion} (round {round_index}) ...", flush=True)
                baseline = run_fairlearn(data, criterion)
                baseline_times.append(baseline["time"])
                if round_index == 0:
                    baseline_row = (baseline["report"], f"mixture of {baseline['models']} models")
            for recipe, overrides in RECIPES.items():
                print(f"cooper_like logistic {criterion} ({recipe}) seed {seed} ...", flush=True)
                metrics = run_ours(
                    data, seed, scratch / f"{criterion}-{recipe}-{seed}", constraint=criterion, **overrides
                )
                report = {key: metrics[f"test_{key}"] for key in _REPORT_KEYS}
                times[recipe].append(metrics["wall_time_s"])
                call_times[recipe].append(metrics["call_s"])
                add_row(
                    f"cooper_like logistic {criterion} ({recipe})",
                    str(seed),
                    report,
                    metrics["wall_time_s"],
                    f"{metrics['returned']['kind']} @ step {metrics['returned']['steps'][0]}",
                    metrics["call_s"],
                )
                passes[recipe].append(
                    report[f"{target['key']}_difference"] <= target["max_difference"]
                    and report["accuracy"] >= target["min_accuracy"]
                )
        if baseline_times:
            fit_times = ", ".join(f"{value:.1f}" for value in baseline_times)
            add_row(
                f"fairlearn ExpGrad {criterion}",
                "-",
                baseline_row[0],
                statistics.median(baseline_times),
                f"{baseline_row[1]}; fits {fit_times} s",
            )
        baseline_time = statistics.median(baseline_times) if baseline_times else float("nan")
        if fairlearn is not None and args.fairlearn_default_threads:
            print(f"fairlearn ExponentiatedGradient {criterion} (default thread pools) ...", flush=True)
            threaded = run_fairlearn(data, criterion, one_thread=False)
            add_row(
                f"fairlearn ExpGrad {criterion} (default BLAS/OpenMP threads)",
                "-",
                threaded["report"],
                threaded["time"],
                "informational: not the equal-resources comparison",
            )
            default_median = statistics.median(times["default"])
            verdicts.append(
                [
                    f"time {criterion} (default), informational: fairlearn with default thread pools "
                    f"{threaded['time']:.1f} s / ours median {default_median:.2f} s",
                    f"{threaded['time'] / default_median:.1f}x",
                    "-",
                ]
            )
        for recipe in RECIPES:
            judged = recipe == JUDGED_RECIPE
            verdicts.append(
                [
                    f"logistic {criterion} ({recipe}){'' if judged else ', informational'}: test "
                    f"{target['key']} difference <= {target['max_difference']} and accuracy >= "
                    f"{target['min_accuracy']}",
                    f"{sum(passes[recipe])}/{len(passes[recipe])} seeds",
                    ("met" if all(passes[recipe]) else "missed") if judged else "-",
                ]
            )
            median = statistics.median(times[recipe])
            ratio = baseline_time / median
            paired = (
                statistics.median(f / o for f, o in zip(baseline_times, times[recipe]))
                if baseline_times
                else ratio
            )
            verdict = (
                "met" if ratio >= TIME_RATIO_TARGET else ("missed" if ratio == ratio else "not measured")
            )
            verdicts.append(
                [
                    f"time {criterion} ({recipe}){'' if judged else ', informational'}: fairlearn median "
                    f"{baseline_time:.1f} s / ours median {median:.2f} s (median of paired ratios {paired:.1f}x)",
                    f"{ratio:.1f}x",
                    verdict if judged else "-",
                ]
            )
            if judged:
                call_median = statistics.median(call_times[recipe])
                verdicts.append(
                    [
                        f"time {criterion} ({recipe}), informational: fairlearn fit median {baseline_time:.1f} s "
                        f"/ our whole train() call median {call_median:.2f} s (test evaluation, files, plots)",
                        f"{baseline_time / call_median:.1f}x",
                        "-",
                    ]
                )
    if args.mlp:
        passes = []
        for seed in args.seeds:
            print(f"cooper_like mlp demographic-parity seed {seed} ...", flush=True)
            metrics = run_ours(data, seed, scratch / f"mlp-{seed}", model="mlp")
            report = {key: metrics[f"test_{key}"] for key in _REPORT_KEYS}
            add_row(
                "cooper_like MLP demographic-parity",
                str(seed),
                report,
                metrics["wall_time_s"],
                f"{metrics['returned']['kind']} @ step {metrics['returned']['steps'][0]}",
                metrics["call_s"],
            )
            passes.append(
                report["dp_difference"] <= MLP_TARGET["max_difference"]
                and report["accuracy"] >= MLP_TARGET["min_accuracy"]
            )
        verdicts.append(
            [
                f"MLP demographic-parity: accuracy >= {MLP_TARGET['min_accuracy']} at DP difference <= "
                f"{MLP_TARGET['max_difference']}",
                f"{sum(passes)}/{len(passes)} seeds",
                "met" if all(passes) else "missed",
            ]
        )
    header = [
        "method",
        "seed",
        "test acc",
        "DP diff",
        "EO diff",
        "DP max dev",
        "EO max dev",
        "fit s",
        "call s",
        "returned",
    ]
    print(text_table(header, rows))
    print(text_table(["target", "measured", "verdict"], verdicts))
    lines = [
        "# Fair classification on Adult: cooper_like vs fairlearn ExponentiatedGradient",
        "",
        markdown_table(header, rows),
        "",
        markdown_table(["target", "measured", "verdict"], verdicts),
        "",
        "Test set (16,281 rows), sensitive attribute sex. DP/EO diff: max - min over groups (fairlearn's "
        "demographic_parity_difference / equalized_odds_difference, checked against fairlearn's functions on "
        "fairlearn's predictions); max dev: max_g |rate_g - rate_overall|, the quantity epsilon bounds "
        "(fairlearn's difference_bound). 'fit s': fairlearn's fit vs cooper_like's train() from the "
        "configuration to the returned model (setup, steps, candidate measurements and log rows, choice), "
        "both without data loading and after their one-time imports, one thread; 'call s': the whole "
        "train() call (adds the test evaluation, metrics.json, model.pt and three plots). cooper_like: one "
        "deterministic model per run, default configuration (see FairnessConfig); the logistic model starts "
        "at zero, so full-batch logistic runs do not depend on the seed.",
        "",
        *environment_lines(notes),
    ]
    return "\n".join(lines) + "\n"


_REPORT_KEYS = (
    "accuracy",
    "dp_difference",
    "eo_difference",
    "dp_max_deviation",
    "eo_max_deviation",
    "tpr_difference",
    "fpr_difference",
)


def neyman_pearson_benchmark(args: argparse.Namespace) -> str:
    from sklearn.linear_model import LogisticRegression

    data = load_adult(("sex",), validation_fraction=0.0)
    scratch = Path(tempfile.mkdtemp(prefix="np_bench_"))
    x, y = data.train.x.numpy(), data.train.y.numpy()
    x_test, y_test = data.test.x.numpy(), data.test.y.numpy()
    with thread_limits():
        started = time.perf_counter()
        baseline = LogisticRegression(max_iter=1000).fit(x, y)
        baseline_time = time.perf_counter() - started
    scores, scores_test = baseline.decision_function(x), baseline.decision_function(x_test)
    rows, verdicts = [], []
    print("cooper_like warm-up (one step, untimed: imports of the logger and the plots) ...", flush=True)
    train_neyman_pearson(NeymanPearsonConfig(epochs=1, out=scratch / "warm-up"), data)
    for alpha in (0.05, 0.1):
        threshold = np.quantile(scores[y == 0], 1 - alpha)
        rows.append(
            [
                "LogisticRegression + threshold at the (1-alpha) quantile of train negatives",
                f"{alpha}",
                "-",
                f"{(scores[y == 0] > threshold).mean():.4f}",
                f"{(scores_test[y_test == 0] > threshold).mean():.4f}",
                f"{(scores_test[y_test == 1] <= threshold).mean():.4f}",
                f"{baseline_time:.2f}",
                "-",
            ]
        )
        passes = []
        for seed in args.seeds:
            print(f"cooper_like neyman-pearson alpha={alpha} seed {seed} ...", flush=True)
            config = NeymanPearsonConfig(alpha=alpha, seed=seed, out=scratch / f"{alpha}-{seed}")
            metrics = train_neyman_pearson(config, data)
            rows.append(
                [
                    "cooper_like NeymanPearson (logistic)",
                    f"{alpha}",
                    str(seed),
                    f"{metrics['train_false_positive_rate']:.4f}",
                    f"{metrics['test_false_positive_rate']:.4f}",
                    f"{metrics['test_false_negative_rate']:.4f}",
                    f"{metrics['wall_time_s']:.2f}",
                    f"{metrics['returned']['kind']} @ step {metrics['returned']['steps'][0]}",
                ]
            )
            passes.append(metrics["test_false_positive_rate"] <= alpha + 0.01)
        verdicts.append(
            [
                f"alpha={alpha}: test FPR <= alpha + 0.01",
                f"{sum(passes)}/{len(passes)} seeds",
                "met" if all(passes) else "missed",
            ]
        )
    header = ["method", "alpha", "seed", "train FPR", "test FPR", "test FNR", "train s", "returned"]
    print(text_table(header, rows))
    print(text_table(["target", "measured", "verdict"], verdicts))
    lines = [
        "# Neyman-Pearson classification on Adult: min FNR s.t. FPR <= alpha",
        "",
        markdown_table(header, rows),
        "",
        markdown_table(["target", "measured", "verdict"], verdicts),
        "",
        "Test set (16,281 rows; 12,435 negatives, 3,846 positives). cooper_like: logistic-loss surrogate of the FNR "
        "on the positives, FPR <= alpha with the sigmoid proxy for the model and the true FPR for the multiplier "
        "(default NeymanPearsonConfig: full batch, 500 steps, nuPI dual lr 5; the logistic model starts at zero). "
        "'train s': scikit-learn's fit vs train_neyman_pearson from the configuration to the returned model, "
        "after a one-step warm-up run (imports). Baseline: the plug-in rule, an unconstrained logistic "
        "regression whose threshold is set on the training negatives.",
        "",
        *environment_lines([f"seeds: {args.seeds}"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=["fairness", "neyman-pearson"], default="fairness")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-mlp", dest="mlp", action="store_false", help="skip the MLP runs")
    parser.add_argument(
        "--no-fairlearn-default-threads",
        dest="fairlearn_default_threads",
        action="store_false",
        help="skip the extra fairlearn fit with its default thread pools (informational row)",
    )
    parser.add_argument(
        "--out", nargs="?", const="", default=None, help="write the markdown table (default path)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.task == "fairness":
        text, default = fairness_benchmark(args), RESULTS_DIR / "fairness_vs_fairlearn.md"
    else:
        text, default = neyman_pearson_benchmark(args), RESULTS_DIR / "neyman_pearson.md"
    if args.out is not None:
        path = Path(args.out) if args.out else default
        write_atomic(path, text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
