"""The fairness trainer and CLI on (a slice of) Adult: constraint reached, outputs, skips, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from problems.common.rates.adult import load_adult
from problems.common.rates.data import RateDataset
from problems.common.rates.groups import GroupError
from problems.fairness.cli import main
from problems.fairness.config import FairnessConfig
from problems.fairness.train import train
from problems.rates.config import NeymanPearsonConfig
from problems.scaffold.config import ConfigError, parse_config


def adult_slice(rows: int = 6000, **kwargs) -> RateDataset:
    """The first ``rows`` training rows of Adult (the test split is kept whole)."""
    data = load_adult(**kwargs)
    data.train = data.train.subset(torch.arange(rows))
    return data


def test_adult_loader_standard_split_and_preprocessing() -> None:
    data = load_adult(validation_fraction=0.2)
    assert data.validation is not None
    assert data.train.num_examples + data.validation.num_examples == 32561 and data.test.num_examples == 16281
    assert data.groups.names == ["sex=Female", "sex=Male"]
    assert not any(name.startswith(("sex", "income")) for name in data.feature_names)
    assert "fnlwgt" in data.feature_names and "workclass=?" in data.feature_names
    assert data.num_features == 106
    assert float(data.test.y.mean()) == pytest.approx(3846 / 16281)  # labels with a trailing period parsed
    both = load_adult(["sex", "race"], validation_fraction=0)
    assert both.groups.num_groups == 10 and both.num_features == 101
    with pytest.raises(ValueError, match=r"unknown sensitive attribute\(s\) \['age'\]"):
        load_adult(["age"])


def test_demographic_parity_run_reduces_the_gap_below_the_bound(tmp_path: Path) -> None:
    config = FairnessConfig(epsilon=0.02, epochs=150, log_every=10, out=tmp_path / "run")
    metrics = train(config, adult_slice())
    assert metrics["train_dp_max_deviation"] <= 0.02 + 0.003
    assert metrics["train_dp_difference"] <= 0.04  # an unconstrained model is near 0.17
    assert metrics["train_accuracy"] >= 0.80
    assert metrics["returned"]["kind"] in ("best-feasible", "least-violating")
    out = tmp_path / "run"
    for name in (
        "metrics.json",
        "metrics.csv",
        "model.pt",
        "violations.png",
        "multipliers.png",
        "tradeoff.png",
    ):
        assert (out / name).exists(), name
    saved = json.loads((out / "metrics.json").read_text())
    for split in ("train", "test"):
        for key in ("accuracy", "dp_difference", "tpr_difference", "fpr_difference", "eo_difference"):
            assert f"{split}_{key}" in saved
    assert {"returned", "wall_time_s", "epsilon_semantics", "last_iterate"} <= set(saved)
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 15
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    logged = {key.split("/")[0] for key in first}
    assert {"violation", "strict_violation", "multiplier", "lr", "skipped_steps"} <= logged


def test_full_batch_logistic_run_does_not_depend_on_the_seed(tmp_path: Path) -> None:
    data = adult_slice(3000)
    runs = [train(FairnessConfig(epochs=5, seed=seed, out=tmp_path / str(seed)), data) for seed in (0, 7)]
    assert runs[0]["test_accuracy"] == runs[1]["test_accuracy"]
    assert runs[0]["multipliers"] == runs[1]["multipliers"]
    assert runs[0]["wall_time_s"] > 0


def test_mlp_run_encodes_numerical_inputs_and_saves_the_encoding(tmp_path: Path) -> None:
    data = adult_slice(3000)
    metrics = train(FairnessConfig(model="mlp", epochs=5, log_every=5, seed=1, out=tmp_path), data)
    assert metrics["config"]["numeric_bins"] == 16 and 0.0 < metrics["test_accuracy"] < 1.0
    state = torch.load(tmp_path / "model.pt", weights_only=False)["model"]
    numerical = {data.feature_names.index(name) for name in ("age", "capital-gain", "hours-per-week")}
    assert numerical <= set(state["network.0.columns"].tolist())
    assert state["network.1.weight"].shape[1] == data.num_features + state["network.0.columns"].numel()


def test_mini_batches_skip_groups_absent_from_a_batch(tmp_path: Path) -> None:
    config = FairnessConfig(
        constraint="equal-opportunity",
        sensitive=["sex", "race"],
        epochs=1,
        batch_size=64,
        log_every=25,
        selection="mixture",
        out=tmp_path,
    )
    metrics = train(config, adult_slice(8000, sensitive=["sex", "race"]))
    assert metrics["skipped_group_constraints"] > 0  # rare (sex, race) cells with no positive in a batch
    assert metrics["returned"]["kind"] == "mixture"
    assert sum(metrics["returned"]["probabilities"]) == pytest.approx(1.0)


def test_group_empty_in_the_training_split_is_an_error(tmp_path: Path) -> None:
    data = adult_slice(2000)
    women = data.train.membership[0]
    data.train = data.train.subset(torch.nonzero(~women | (data.train.y < 0.5)).reshape(-1))
    with pytest.raises(GroupError, match=r"'sex=Female' has no member with label 1 in the train split"):
        train(FairnessConfig(constraint="equalized-odds", epochs=2, out=tmp_path), data)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--epsilon", "0"], "epsilon"),
        (["--epsilon", "-0.1"], "epsilon"),
        (["--sensitive", "age"], "sensitive"),
        (["--batch-size", "0"], "batch_size"),
        (["--validation-fraction", "0.7"], "validation_fraction"),
        (["--dual-lr", "nan"], "dual_lr"),
    ],
)
def test_cli_rejects_bad_values_naming_the_field(
    argv: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert field in capsys.readouterr().err


def test_cli_rejects_unknown_criterion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--constraint", "calibration", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_config_defaults_per_model_and_errors() -> None:
    logistic, mlp = FairnessConfig(), FairnessConfig(model="mlp")
    assert (logistic.resolved().epochs, logistic.resolved().lr, logistic.resolved().dual_lr) == (
        100,
        0.2,
        1.0,
    )
    assert (mlp.resolved().epochs, mlp.resolved().lr, mlp.resolved().dual_lr) == (600, 0.01, 0.2)
    assert (logistic.numeric_bins, mlp.numeric_bins) == (0, 16)
    assert FairnessConfig(model="mlp", numeric_bins=0).numeric_bins == 0
    assert FairnessConfig(dual_lr=0.5).resolved().dual_lr == 0.5
    assert NeymanPearsonConfig().resolved().dual_lr == 5.0  # its own default, not the fairness table
    assert NeymanPearsonConfig().resolved().epochs == 500
    assert FairnessConfig(sensitive="sex,race").sensitive == ["sex", "race"]  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sensitive"):
        parse_config(FairnessConfig, {"sensitive": "sex,sex"})


def test_cli_runs_and_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--epochs", "3", "--log-every", "1", "--threads", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"test_accuracy", "test_dp_difference", "returned", "wall_time_s"} <= set(summary)
    assert (tmp_path / "metrics.json").exists()
