"""``python -m problems.sparsity export``: a trained run's checkpoint -> a smaller dense model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from problems.scaffold.checkpoints import atomic_write_bytes, load_checkpoint
from problems.scaffold.datasets import load_digits_split, mnist5k_split
from problems.sparsity.config import SparsityConfig
from problems.sparsity.export import count_nonzero_parameters, count_parameters, export_dense, measure_speedup
from problems.sparsity.train import build_model


def equivalence_tolerance(largest_output: float) -> float:
    r""":math:`\max(10^{-5},\ 4\,\epsilon_{32}\,\max|y|)`: 1e-5, or 4 float32 ulps of the largest output.

    The exported model's smaller products sum in another order than the gated model's, a rounding
    difference of a few ulps of the outputs: above :math:`|y| \approx 20`, 1e-5 is below float32's
    resolution.
    """
    return max(1e-5, 4 * torch.finfo(torch.float32).eps * largest_output)


def export_checkpoint(checkpoint: Path, out: Path, repeats: int = 20) -> dict[str, float]:
    """Rebuild the gated model of ``checkpoint``, export it, check equivalence, time it, save it.

    The outputs on the test set must agree within :func:`equivalence_tolerance`.

    The exported module is saved whole (``torch.save(module)``; its shapes depend on the gates, so a
    state dict alone cannot be loaded into a fresh architecture): load it with
    ``torch.load(path, weights_only=False)`` — only for files you trust.
    """
    state = load_checkpoint(checkpoint)
    config = SparsityConfig(**state["config"])
    if config.method == "magnitude":
        raise ValueError(f"{checkpoint}: magnitude-pruning runs have no gates to export")
    data = mnist5k_split() if config.dataset == "mnist5k" else load_digits_split()
    model = build_model(config, data.x_train.shape[1])
    model.load_state_dict(state["model"])
    model.eval()
    exported = export_dense(model)
    with torch.no_grad():
        outputs = model(data.x_test)
        difference = float((outputs - exported(data.x_test)).abs().max())
    scale = float(outputs.abs().max())
    tolerance = equivalence_tolerance(scale)
    if difference > tolerance:
        raise RuntimeError(
            f"exported model differs from the gated model by {difference:.3g} (> {tolerance:.3g}, "
            f"largest output {scale:.3g})"
        )
    import io

    buffer = io.BytesIO()
    torch.save(exported, buffer)
    atomic_write_bytes(out, buffer.getvalue())
    timing = measure_speedup(model, exported, data.x_test[:256], repeats=repeats)
    report = {
        "max_abs_difference": difference,
        "tolerance": tolerance,
        "max_abs_output": scale,
        "parameters_gated_model": count_parameters(model),
        "parameters_exported": count_parameters(exported),
        "nonzero_parameters_exported": count_nonzero_parameters(exported),
        **{key: float(value) for key, value in timing.items()},
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return report
