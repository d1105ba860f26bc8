"""Distributed training: 2 gloo processes on loopback give the multipliers and weights of 1 process.

The processes are spawned once per module (``tests/distributed_case.py`` holds their code); every
check below reads what they recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import cooper_like as cooper
from cooper_like import distributed
from problems.sparsity.config import SparsityConfig
from problems.sparsity.train import train
from tests import distributed_case as case

ROOT = Path(__file__).resolve().parents[1]


# Each spawn of 2 processes serves exactly one test function: pytest-xdist may send the tests of a
# module to different workers, and a shared fixture would then spawn once per worker.


def test_two_ranks_with_batch_b_match_one_process_with_batch_2b(tmp_path: Path) -> None:
    """Every scheme and updater: the same multipliers and weights as one process (float tolerance), and
    multipliers bit-identical across the ranks after every step."""
    ranks = case.launch("equivalence", tmp_path)
    for scheme in case.SCHEMES:
        check_matches_one_process(scheme, [rank[scheme] for rank in ranks])
        check_bit_identical(scheme, *(rank[scheme] for rank in ranks))


def check_matches_one_process(scheme: str, runs: list[dict[str, Any]]) -> None:
    reference = case.reference(scheme)
    for run in runs:
        for step, (got, expected) in enumerate(zip(run["history"], reference["history"], strict=True)):
            for name in expected:
                torch.testing.assert_close(
                    got[name], expected[name], rtol=1e-5, atol=1e-6, msg=f"{scheme}: {name} at step {step}"
                )
        for name, value in reference["weights"].items():
            torch.testing.assert_close(run["weights"][name], value, rtol=1e-5, atol=1e-6)
    # the run moved every kind of multiplier (the comparison is not between untouched zeros)
    final = reference["history"][-1]
    assert all(bool(final[name].abs().sum() > 0) for name in ("rate", "group_rate", "per_sample", "norm"))


def check_bit_identical(scheme: str, first: dict[str, Any], second: dict[str, Any]) -> None:
    assert len(first["history"]) == case.STEPS
    for step, (a, b) in enumerate(zip(first["history"], second["history"], strict=True)):
        for name in a:
            assert torch.equal(a[name], b[name]), f"{scheme}: {name} differs across ranks at step {step}"
    for name in first["weights"]:
        assert torch.equal(first["weights"][name], second["weights"][name]), f"{scheme}: {name}"


def test_synchronization_across_two_processes(tmp_path: Path) -> None:
    """The helpers, the global dual measurements, mismatches, NaN agreement, the switch, and the sparsity
    trainer itself (gate sampling, dual restarts) checked for identical multipliers after every step."""
    ranks = case.launch("mechanics_and_trainer", tmp_path)
    mechanics = [rank["mechanics"] for rank in ranks]
    check_helpers(mechanics)
    check_global_measurements(mechanics)
    for results in mechanics:
        assert results["mismatch"].startswith("DistributedMismatchError: the processes measured")
    check_non_finite_agreement(mechanics)
    local = [results["local_multiplier"].item() for results in mechanics]
    synced = [results["global_multiplier"].item() for results in mechanics]
    assert local == [1.0, 0.5]  # distributed=False: violation 1 - 0 and 1 - 0.5, each rank on its own
    assert synced == [0.75, 0.75]  # distributed=True: their mean, on both ranks
    first, second = (rank["trainer"] for rank in ranks)
    assert first["checked_on_every_step"] and second["checked_on_every_step"]
    assert len(first["multipliers"]) == len(second["multipliers"]) > 10
    for step, (a, b) in enumerate(zip(first["multipliers"], second["multipliers"], strict=True)):
        assert torch.equal(a, b), f"trainer multipliers differ across ranks after step {step + 1}"


def check_helpers(mechanics: list[dict[str, Any]]) -> None:
    for results in mechanics:
        # rank 0: [1, 2] over 3 samples, rank 1: [2, 4] over 5 samples
        torch.testing.assert_close(results["global_mean"], torch.tensor([13 / 8, 26 / 8]))
        assert results["global_mean_empty"].item() == 4.0  # rank 1 has no sample (and a NaN mean)
        torch.testing.assert_close(results["global_ratio"], torch.tensor([3 / 4, 1 / 8]))
        assert results["global_sum"].tolist() == [3] and results["global_sum"].dtype == torch.int64


def check_global_measurements(mechanics: list[dict[str, Any]]) -> None:
    for index, results in enumerate(mechanics):
        # dense: [1, -1] (weight 1) and [2, -2] (weight 3)
        torch.testing.assert_close(results["dense"], torch.tensor([1.75, -1.75]))
        # indexed: rank 0 observed rows 1, 7, 3; rank 1 none
        assert results["indexed_rows"].tolist() == [1, 7, 3]
        torch.testing.assert_close(results["indexed_values"], torch.tensor([0.1, 0.7, 0.3]))
        # implicit features (float16, 2 columns) and bfloat16 violations, concatenated in rank order
        assert results["featured_values"].dtype == torch.bfloat16
        assert results["featured_values"].tolist() == [0.0, 0.0, 1.0, 1.0]
        assert results["featured_features"].dtype == torch.float16
        assert results["featured_features"][:, 0].tolist() == [0.25, 0.25, 1.25, 1.25]
        # the primal violation stays local
        assert results["primal_untouched"].tolist() == [1.0 * (index + 1), -1.0 * (index + 1)]


def check_non_finite_agreement(mechanics: list[dict[str, Any]]) -> None:
    """A NaN on rank 1 only: both ranks skip (nothing moves), or both raise."""
    for results in mechanics:
        assert results["skip_count"] == 1
        assert results["skip_multiplier"].tolist() == [0.0] and results["skip_x"].tolist() == [1.0]
        assert any("skipping a step" in message for message in results["skip_warning"])
        assert results["raise"].startswith("NonFiniteError: non-finite value in this step")


# ---------------------------------------------------------------------------------------------------
# Without a process group (in this process)
# ---------------------------------------------------------------------------------------------------


def test_without_a_process_group_nothing_is_communicated() -> None:
    assert not distributed.is_active()
    value = torch.tensor([1.0, 2.0], requires_grad=True)
    assert torch.equal(distributed.global_mean(value, 3), value.detach())
    assert torch.equal(distributed.global_sum(value), value.detach())
    torch.testing.assert_close(
        distributed.global_ratio(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])),
        torch.tensor([0.5, 0.75]),
    )
    assert distributed.global_ratio(torch.tensor([1]), torch.tensor([2])).dtype == torch.get_default_dtype()
    assert distributed.all_ranks_agree(False) is False
    state = cooper.CMPState(loss=torch.tensor(1.0))
    assert distributed.synchronize_dual_measurements(state) is state


def test_switch_and_argument_errors() -> None:
    problem = case.Mismatched(0)
    x = torch.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="distributed=True but no torch.distributed process group"):
        case.small_optimizer(problem, x, distributed=True)
    with pytest.raises(TypeError, match="distributed must be None, True or False, got 'yes'"):
        case.small_optimizer(problem, x, distributed="yes")
    with pytest.raises(TypeError, match="distributed must be None, True or False"):
        cooper.optim.UnconstrainedOptimizer(problem, torch.optim.SGD([x], lr=0.1), distributed=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="global_ratio: numerator shape"):
        distributed.global_ratio(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="num_samples must be >= 0, got -1.0"):
        cooper.ConstraintState(torch.tensor(0.0), num_samples=-1)
    with pytest.raises(TypeError, match="num_samples must be a number or None, got str"):
        cooper.ConstraintState(torch.tensor(0.0), num_samples="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"num_samples must be a scalar, got shape \(2,\)"):
        cooper.ConstraintState(torch.tensor(0.0), num_samples=torch.ones(2))
    with pytest.raises(ValueError, match="do not have one row per violation row"):
        distributed.row_layout(torch.zeros(3), torch.zeros(2, 4))


def test_weighted_mean_kernel() -> None:
    values = torch.tensor([[1.0], [float("nan")], [4.0]], dtype=torch.float64)
    mean = distributed.weighted_mean(values, torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64))
    assert mean.tolist() == [13 / 4]
    assert distributed.weighted_mean(values[[0, 2]], torch.zeros(2, dtype=torch.float64)).tolist() == [2.5]


def test_pack_bits_is_lossless() -> None:
    for value in (
        torch.tensor([1.5, -0.0, float("inf"), float("nan")], dtype=torch.bfloat16),
        torch.tensor([1e-7, 3.0], dtype=torch.float16),
        torch.tensor([0.1], dtype=torch.float64),
    ):
        back = distributed.unpack_bits(distributed.pack_bits(value), value.dtype)
        assert back.dtype == value.dtype
        assert torch.equal(back.view(torch.uint8), value.view(torch.uint8))  # the same bits, NaN included
    for value in (torch.tensor([2**53 + 1, -5]), torch.tensor([True, False])):
        back = distributed.unpack_bits(distributed.pack_bits(value), value.dtype)
        assert back.dtype == value.dtype and torch.equal(back, value)


# ---------------------------------------------------------------------------------------------------
# The sparsity trainer under torchrun
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sparsity_cli_under_torchrun(tmp_path: Path) -> None:
    """``--distributed`` under ``torchrun --nproc-per-node 2``: rank 0 writes the outputs, which match one
    process training on the whole batches (the ranks draw the same gate samples)."""
    out = tmp_path / "ddp"
    arguments = ["train", "--model", "tiny", "--dataset", "digits", "--epochs", "2", "--seed", "1"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1", "GLOO_SOCKET_IFNAME": "lo"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    launcher += [
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(case.free_port()),
        "-m",
        "problems.sparsity",
    ]
    result = subprocess.run(
        [*launcher, *arguments, "--distributed", "--checkpoint-every", "5", "--out", str(out)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.decode().count('"test_accuracy"') == 1  # only rank 0 reports
    ddp = json.loads((out / "metrics.json").read_text())
    alone = train(SparsityConfig(model="tiny", dataset="digits", epochs=2, seed=1, out=tmp_path / "single"))
    torch.testing.assert_close(torch.tensor(ddp["multipliers"]), torch.tensor(alone["multipliers"]))
    assert abs(ddp["expected_density"] - alone["expected_density"]) < 1e-5
    assert ddp["config"]["distributed"] is True
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "metrics.csv", "density.png"):
        assert (out / name).exists(), name
