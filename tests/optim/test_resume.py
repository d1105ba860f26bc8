"""Exact resume: k + m steps equal k steps, a weights-only checkpoint, a fresh process and m steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

import cooper_like as cooper
from tests.optim import resume_case

K, M = 7, 6


def tensors(tree: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint, by path."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(tree, torch.Tensor):
        found[prefix] = tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            found.update(tensors(value, f"{prefix}/{key}"))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            found.update(tensors(value, f"{prefix}/{index}"))
    return found


def test_resume_in_a_fresh_process_is_bit_exact(tmp_path: Path) -> None:
    combos = resume_case.combinations()
    reference = {f"{s}/{u}": resume_case.run(s, u, 0, K + M) for s, u in combos}
    halfway = {f"{s}/{u}": resume_case.run(s, u, 0, K) for s, u in combos}
    torch.save(halfway, tmp_path / "halfway.pt")
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.optim.resume_case",
            str(tmp_path / "halfway.pt"),
            str(tmp_path / "end.pt"),
            str(K),
            str(K + M),
        ],
        check=True,
        cwd=root,
        timeout=240,
    )
    resumed = torch.load(tmp_path / "end.pt", weights_only=True)
    for name in reference:
        expected, actual = tensors(reference[name]), tensors(resumed[name])
        assert expected.keys() == actual.keys(), name
        assert len(expected) > 10, name
        for path in expected:
            assert torch.equal(expected[path], actual[path]), f"{name}: {path} differs after resume"
        # the run did move the multipliers (the comparison is not between untouched zeros)
        assert tensors(reference[name]["cmp"])["/multipliers/per_sample/weight"].abs().sum() > 0, name


def test_checkpoint_between_extrapolation_and_step(tmp_path: Path) -> None:
    """A hand-written extragradient loop checkpointed after extrapolation() resumes exactly."""

    def loop(resume_at: int | None) -> torch.Tensor:
        torch.manual_seed(0)
        x = torch.nn.Parameter(torch.tensor([2.0, -1.0]))
        y = torch.nn.Parameter(torch.tensor([0.5]))
        primal, dual = cooper.optim.ExtraAdam([x], lr=0.1), cooper.optim.ExtraSGD([y], lr=0.1, maximize=True)

        def gradients() -> None:
            x.grad, y.grad = None, None
            lagrangian = x.pow(2).sum() + y.sum() * (x.sum() - 1.0)
            lagrangian.backward()

        for step in range(6):
            gradients()
            primal.extrapolation()
            dual.extrapolation()
            if step == resume_at:
                state = {
                    "x": x.detach().clone(),
                    "y": y.detach().clone(),
                    "p": primal.state_dict(),
                    "d": dual.state_dict(),
                }
                torch.save(state, tmp_path / "mid.pt")
                saved = torch.load(tmp_path / "mid.pt", weights_only=True)
                x = torch.nn.Parameter(saved["x"])
                y = torch.nn.Parameter(saved["y"])
                primal, dual = (
                    cooper.optim.ExtraAdam([x], lr=0.1),
                    cooper.optim.ExtraSGD([y], lr=0.1, maximize=True),
                )
                primal.load_state_dict(saved["p"])
                dual.load_state_dict(saved["d"])
            gradients()
            primal.step()
            dual.step()
        return torch.cat([x.detach(), y.detach()])

    assert torch.equal(loop(None), loop(resume_at=3))
