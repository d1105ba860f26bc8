"""Pieces every classification problem uses: the plain cross-entropy problem, accuracy, an autocast forward."""

from __future__ import annotations

import torch
from torch import nn

import cooper_like as cooper

__all__ = ["AutocastForward", "CrossEntropy", "accuracy"]


class CrossEntropy(cooper.ConstrainedMinimizationProblem):
    """The unconstrained problem :math:`\\min_\\theta \\mathrm{CE}(f_\\theta(x), y)` (baselines, warm-up, fine-tuning)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def compute_cmp_state(self, inputs: torch.Tensor, labels: torch.Tensor) -> cooper.CMPState:
        logits = self.model(inputs)
        return cooper.CMPState(loss=nn.functional.cross_entropy(logits, labels))


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> float:
    """Accuracy of the deterministic (eval-mode) model, in chunks of ``chunk`` examples."""
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(inputs[i : i + chunk]).argmax(1) == labels[i : i + chunk]).sum())
        for i in range(0, len(inputs), chunk)
    )
    model.train(was_training)
    return correct / len(inputs)


class AutocastForward(nn.Module):
    """Runs the wrapped model's forward pass under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

    The outputs are cast back to float32, so the loss, the constraints (computed outside) and the
    multipliers stay in float32; backward runs outside autocast.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = self.module(inputs)
        return outputs.float()
