"""Per-step overhead of ``cooper_like`` against a hand-written Lagrangian step and Cooper 1.0.1.

What is measured
    The wall time of one simultaneous primal-dual gradient step on the same problem,
    taken three ways in one process:

    * ``hand``: a hand-written Lagrangian step: ``zero_grad(set_to_none=True)``, forward,
      ``loss + (lam * g).sum()`` with ``lam`` a plain tensor, ``backward``, a
      ``torch.optim.SGD`` step, then projected ascent
      ``lam.add_(g.detach(), alpha=dual_lr).clamp_(min=0)``;
    * ``cooper_like``: ``cooper_like.optim.SimultaneousOptimizer(...).roll(...)`` with a
      ``DenseMultiplier`` and ``torch.optim.SGD(..., maximize=True)`` as dual optimizer;
    * ``cooper``: Cooper 1.0.1 set up the same way (skipped with a note if ``import cooper``
      fails).

    Two more hand-written variants are informational columns, not targets: the dual update done by a
    ``torch.optim.SGD(maximize=True)`` step (the floor of any design whose multiplier updater is a
    torch optimizer), and the hand-written step with the lean torch calls that cooper_like makes
    (gradients set to ``None`` and the primal ``step`` called without torch's per-call profiler range
    when no profiler records, see ``cooper_like.optim.torch_calls``): cooper_like against that one is
    the cost of the constrained-optimization machinery alone.

    The CMP class is written once against the API common to both libraries.  Methods are
    timed round-robin (each repeat runs a block of ``--steps-per-block`` steps of every
    method, in an order drawn at random per repeat) with ``torch.set_num_threads(1)`` after warm-up
    steps; the reported time is the median over repeats of the per-step time of a block,
    the ratio is the median over repeats of the per-repeat ratio (IQR in brackets). Short blocks
    (10 steps) and many repeats (300) keep the two blocks of a ratio close in time, so that a slow
    spell of a shared machine affects both.

    Problem sizes (batch of 128 inputs in R^64 with random labels, cross-entropy loss):

    * ``small``: MLP 64-32-10 (ReLU), ONE inequality constraint
      ``mean(logits**2) - 0.02 <= 0`` (violated at initialisation, so the multiplier is active);
    * ``large``: MLP 64-256-10 (ReLU), 10,000 inequality constraints
      ``W1.flatten()[:10000]**2 - 0.01 <= 0`` on the first 10,000 first-layer weights
      (about 20 % violated at initialisation): cheap, differentiable, with a diagonal Jacobian.

    Before timing, every method is run for ``--check-steps`` steps from identical initial
    weights and data; parameters and multipliers must agree to float tolerance.

    A sixth column runs ``cooper_like`` with its lean torch calls switched off (the public
    ``zero_grad``/``step`` calls it falls back to on a torch version the suite has not verified),
    and a seventh with the NaN/Inf check off (``non_finite="off"``): the default check's cost, which on
    a GPU includes one host-device synchronisation per step. ``--device cuda`` runs everything on the
    GPU (each timed block then ends with ``torch.cuda.synchronize()``).

Target
    time(cooper_like) / time(hand): median <= 1.03 and upper quartile <= 1.05 for each size.

Command
    python benchmarks/step_overhead.py [--quick] [--repeats 300] [--steps-per-block 10] [--out [PATH]]

    (Cooper 1.0.1 must be importable as ``cooper`` for the third column, e.g. via
    ``pip install cooper-optim==1.0.1`` or ``PYTHONPATH``.)
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _common import (
    RESULTS_DIR,
    device_problem,
    device_synchronizer,
    environment_lines,
    import_library,
    markdown_table,
    median,
    run_interleaved,
    text_table,
    write_atomic,
)
from torch import nn

from cooper_like.optim import torch_calls
from cooper_like.optim.torch_calls import clear_gradients, optimizer_step

LEAN_CALLS_HERE = torch_calls.LEAN_CALLS
TARGET_RATIO = 1.03  # median of the per-repeat ratios
TARGET_UPPER_QUARTILE = 1.05
PRIMAL_LR = 1e-2
DUAL_LR = 5e-2
BATCH_SIZE = 128
IN_FEATURES = 64
NUM_CLASSES = 10
LOGIT_BOUND = 0.02  # small size: mean(logits**2) <= LOGIT_BOUND
WEIGHT_BOUND = 0.01  # large size: w_j**2 <= WEIGHT_BOUND for the first 10,000 first-layer weights
DEFAULT_OUT = RESULTS_DIR / "step_overhead.md"

ViolationFn = Callable[[nn.Sequential, torch.Tensor], torch.Tensor]


def mean_sq_logit_violation(model: nn.Sequential, logits: torch.Tensor) -> torch.Tensor:
    """One constraint: mean squared logit minus a bound, as a tensor of shape (1,)."""
    return logits.pow(2).mean().reshape(1) - LOGIT_BOUND


def make_weight_sq_violation(num_constraints: int) -> ViolationFn:
    """``num_constraints`` constraints ``w_j**2 - WEIGHT_BOUND`` on the first-layer weights."""

    def violation(model: nn.Sequential, logits: torch.Tensor) -> torch.Tensor:
        return model[0].weight.reshape(-1)[:num_constraints].pow(2) - WEIGHT_BOUND

    return violation


@dataclass(frozen=True)
class SizeSpec:
    name: str
    hidden: int
    num_constraints: int
    violation_fn: ViolationFn
    description: str


SIZES = (
    SizeSpec("small", 32, 1, mean_sq_logit_violation, "MLP 64-32-10, 1 constraint"),
    SizeSpec("large", 256, 10_000, make_weight_sq_violation(10_000), "MLP 64-256-10, 10,000 constraints"),
)


def objective_and_violation(
    model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, violation_fn: ViolationFn
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and constraint violations: the one computation shared by every method."""
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), violation_fn(model, logits)


def make_cmp(lib: ModuleType, model: nn.Sequential, spec: SizeSpec, device: torch.device) -> Any:
    """A CMP for ``spec`` built from library ``lib`` (``cooper_like`` or ``cooper``)."""

    class BenchCMP(lib.ConstrainedMinimizationProblem):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.violation_fn = spec.violation_fn
            self.constraint = lib.Constraint(
                constraint_type=lib.ConstraintType.INEQUALITY,
                multiplier=lib.multipliers.DenseMultiplier(
                    num_constraints=spec.num_constraints, device=device
                ),
            )

        def compute_cmp_state(self, x: torch.Tensor, y: torch.Tensor) -> Any:
            loss, violation = objective_and_violation(self.model, x, y, self.violation_fn)
            state = lib.ConstraintState(violation=violation)
            return lib.CMPState(loss=loss, observed_constraints={self.constraint: state})

    return BenchCMP()


class Method:
    """One way of taking the step; owns its own copy of the model and optimizer state."""

    def step(self) -> None:
        raise NotImplementedError

    def parameters(self) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def multipliers(self) -> torch.Tensor:
        raise NotImplementedError


class HandWritten(Method):
    def __init__(self, model: nn.Sequential, spec: SizeSpec, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y, self.violation_fn = model, x, y, spec.violation_fn
        self.optimizer = torch.optim.SGD(model.parameters(), lr=PRIMAL_LR)
        self.lam = torch.zeros(spec.num_constraints, device=x.device)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss, violation = objective_and_violation(self.model, self.x, self.y, self.violation_fn)
        (loss + (self.lam * violation).sum()).backward()
        self.optimizer.step()
        self.lam.add_(violation.detach(), alpha=DUAL_LR).clamp_(min=0)

    def parameters(self) -> Iterator[torch.Tensor]:
        return self.model.parameters()

    def multipliers(self) -> torch.Tensor:
        return self.lam.clone()


class HandWrittenTorchDual(HandWritten):
    """The hand-written step with the multipliers updated by a ``torch.optim.SGD(maximize=True)``.

    Not a target: it measures the floor that any design whose dual updater is a torch optimizer pays.
    """

    def __init__(self, model: nn.Sequential, spec: SizeSpec, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__(model, spec, x, y)
        self.lam_param = nn.Parameter(torch.zeros(spec.num_constraints, device=x.device))
        self.dual = torch.optim.SGD([self.lam_param], lr=DUAL_LR, maximize=True)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.lam_param.grad = None
        loss, violation = objective_and_violation(self.model, self.x, self.y, self.violation_fn)
        (loss + (self.lam_param.detach() * violation).sum()).backward()
        self.optimizer.step()
        self.lam_param.grad = violation.detach().clone()
        self.dual.step()
        with torch.no_grad():
            self.lam_param.clamp_(min=0)

    def multipliers(self) -> torch.Tensor:
        return self.lam_param.detach().clone()


class HandWrittenLeanTorchCalls(HandWritten):
    """The hand-written step with the lean torch calls cooper_like makes (informational, not a target).

    ``cooper_like`` clears gradients and steps the primal optimizers without torch's per-call profiler
    ranges when nothing would observe them (:mod:`cooper_like.optim.torch_calls`); a hand-written loop
    can do the same. ``cooper_like`` / this method is the overhead of the constrained-optimization
    machinery alone (problem state, Lagrangians, NaN check, multiplier update and projection).
    """

    def step(self) -> None:
        clear_gradients(self.optimizer)
        loss, violation = objective_and_violation(self.model, self.x, self.y, self.violation_fn)
        (loss + (self.lam * violation).sum()).backward()
        optimizer_step(self.optimizer)
        self.lam.add_(violation.detach(), alpha=DUAL_LR).clamp_(min=0)


class LibraryMethod(Method):
    def __init__(
        self,
        lib: ModuleType,
        model: nn.Sequential,
        spec: SizeSpec,
        x: torch.Tensor,
        y: torch.Tensor,
        **optimizer_kwargs: Any,
    ) -> None:
        self.model = model
        self.cmp = make_cmp(lib, model, spec, x.device)
        self.optimizer = lib.optim.SimultaneousOptimizer(
            cmp=self.cmp,
            primal_optimizers=torch.optim.SGD(model.parameters(), lr=PRIMAL_LR),
            dual_optimizers=torch.optim.SGD(self.cmp.dual_parameters(), lr=DUAL_LR, maximize=True),
            **optimizer_kwargs,
        )
        self.kwargs = {"x": x, "y": y}

    def step(self) -> None:
        self.optimizer.roll(compute_cmp_state_kwargs=self.kwargs)

    def parameters(self) -> Iterator[torch.Tensor]:
        return self.model.parameters()

    def multipliers(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.cmp.dual_parameters()])


class LibraryPublicCalls(LibraryMethod):
    """``cooper_like`` restricted to torch's public calls, as on a torch version it has not verified.

    The lean calls of :mod:`cooper_like.optim.torch_calls` (undecorated ``step``, hook dictionaries,
    profiler flag) are switched off for this method's steps only: the ratio is what a user on another
    torch version pays.
    """

    def step(self) -> None:
        torch_calls.LEAN_CALLS = False
        try:
            self.optimizer.roll(compute_cmp_state_kwargs=self.kwargs)
        finally:
            torch_calls.LEAN_CALLS = LEAN_CALLS_HERE


def build_methods(
    spec: SizeSpec, libs: dict[str, ModuleType], seed: int, device: str = "cpu"
) -> dict[str, Method]:
    """Every method on identical initial weights and data (one fixed batch), on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH_SIZE, IN_FEATURES, generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (BATCH_SIZE,), generator=gen).to(device)
    torch.manual_seed(seed)
    template = nn.Sequential(
        nn.Linear(IN_FEATURES, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, NUM_CLASSES)
    ).to(device)
    methods: dict[str, Method] = {
        "hand": HandWritten(copy.deepcopy(template), spec, x, y),
        # A second instance of the same step: its ratio to "hand" is the benchmark's own resolution.
        "hand_again": HandWritten(copy.deepcopy(template), spec, x, y),
        "hand_torch_dual": HandWrittenTorchDual(copy.deepcopy(template), spec, x, y),
        "hand_lean_calls": HandWrittenLeanTorchCalls(copy.deepcopy(template), spec, x, y),
    }
    for role, lib in libs.items():
        methods[role] = LibraryMethod(lib, copy.deepcopy(template), spec, x, y)
    if "library" in libs and libs["library"].__name__ == "cooper_like":
        methods["library_public_calls"] = LibraryPublicCalls(
            libs["library"], copy.deepcopy(template), spec, x, y
        )
        # The NaN/Inf check off: the cost of the default check (one host synchronisation on a GPU).
        methods["library_guard_off"] = LibraryMethod(
            libs["library"], copy.deepcopy(template), spec, x, y, non_finite="off"
        )
    return methods


def check_agreement(
    spec: SizeSpec, libs: dict[str, ModuleType], steps: int, seed: int, device: str = "cpu"
) -> str:
    """Run every method ``steps`` steps from the same start; assert that they agree."""
    methods = build_methods(spec, libs, seed, device)
    for method in methods.values():
        for _ in range(steps):
            method.step()
    ref = methods["hand"]
    ref_params = [p.detach() for p in ref.parameters()]
    ref_lam = ref.multipliers()
    parts = [f"{spec.name}: {steps} steps, {int((ref_lam > 0).sum())}/{ref_lam.numel()} multipliers > 0"]
    for role, method in methods.items():
        if role == "hand":
            continue
        params = [p.detach() for p in method.parameters()]
        lam = method.multipliers()
        assert lam.shape == ref_lam.shape, f"{role}: multiplier shape {lam.shape} != {ref_lam.shape}"
        param_diff = max(float((a - b).abs().max()) for a, b in zip(params, ref_params))
        lam_diff = float((lam - ref_lam).abs().max())
        ok = all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(params, ref_params))
        ok = ok and torch.allclose(lam, ref_lam, rtol=1e-4, atol=1e-5)
        parts.append(f"{role} vs hand: max|dparam|={param_diff:.1e}, max|dlambda|={lam_diff:.1e}")
        assert ok, f"{spec.name}: {role} disagrees with the hand-written step ({parts[-1]})"
    return "; ".join(parts)


def fmt_ratio(values: list[float]) -> str:
    if not values:
        return "skipped"
    if len(values) < 4:
        return f"{median(values):.3f}"
    qs = sorted(values)
    q1, q3 = qs[len(qs) // 4], qs[(3 * len(qs)) // 4]
    return f"{median(values):.3f} [{q1:.2f}, {q3:.2f}]"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="round-robin repeats (default 300)")
    parser.add_argument(
        "--steps-per-block", type=int, default=None, help="steps per timed block (default 10)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per method (default 50)")
    parser.add_argument("--check-steps", type=int, default=None, help="steps of the agreement check (25)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 6 repeats of 10 steps, short warm-up and check"
    )
    parser.add_argument(
        "--sizes", nargs="+", choices=[s.name for s in SIZES], default=[s.name for s in SIZES]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device, e.g. cuda (each timed block ends with a synchronisation)",
    )
    parser.add_argument(
        "--out",
        nargs="?",
        const=str(DEFAULT_OUT),
        default=None,
        metavar="PATH",
        help=f"write the table as markdown (default path: {DEFAULT_OUT.relative_to(DEFAULT_OUT.parents[2])})",
    )
    # Hidden switches, used to develop the script before cooper_like existed.
    parser.add_argument("--library-module", default="cooper_like", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-module", default="cooper", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in (
        ("repeats", 300, 6),
        ("steps_per_block", 10, 10),
        ("warmup", 50, 10),
        ("check_steps", 25, 10),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if (problem := device_problem(args.device)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    lib, lib_note = import_library(args.library_module)
    if lib is None:
        print(f"error: {lib_note}", file=sys.stderr)
        return 2
    libs: dict[str, ModuleType] = {"library": lib}
    base, base_note = import_library(args.baseline_module)
    if base is None:
        print(f"note: baseline skipped: {base_note}")
        base_note = f"baseline skipped: {base_note}"
    else:
        libs["baseline"] = base
    labels = {"hand": "hand-written", "library": args.library_module, "baseline": args.baseline_module}

    notes = [f"library: {lib_note}", f"baseline: {base_note}"]
    rows: list[list[str]] = []
    for spec in (s for s in SIZES if s.name in args.sizes):
        check = check_agreement(spec, libs, args.check_steps, args.seed, args.device)
        print(f"check OK: {check}")
        notes.append(f"agreement check OK: {check}")

        methods = build_methods(spec, libs, args.seed, args.device)
        for method in methods.values():
            for _ in range(args.warmup):
                method.step()
        times = run_interleaved(
            {role: m.step for role, m in methods.items()},
            repeats=args.repeats,
            steps_per_block=args.steps_per_block,
            synchronize=device_synchronizer(args.device),
            progress=lambda r, s=spec: print(
                f"  {s.name}: repeat {r + 1}/{args.repeats}", end="\r", file=sys.stderr, flush=True
            ),
        )
        print(file=sys.stderr)
        ratios = {
            role: [t / h for t, h in zip(times[role], times["hand"])] if role in times else []
            for role in (
                "hand_again",
                "library",
                "library_public_calls",
                "library_guard_off",
                "baseline",
                "hand_torch_dual",
                "hand_lean_calls",
            )
        }
        machinery = [t / h for t, h in zip(times["library"], times["hand_lean_calls"])]
        lib_ratio = median(ratios["library"])
        ordered = sorted(ratios["library"])
        upper_quartile = ordered[(3 * len(ordered)) // 4]
        met = lib_ratio <= TARGET_RATIO and upper_quartile <= TARGET_UPPER_QUARTILE
        rows.append(
            [
                spec.description,
                f"{median(times['hand']):.1f}",
                f"{median(times['library']):.1f}",
                f"{median(times['baseline']):.1f}" if "baseline" in times else "skipped",
                fmt_ratio(ratios["hand_again"]),
                fmt_ratio(ratios["library"]),
                fmt_ratio(ratios["library_public_calls"]),
                fmt_ratio(ratios["library_guard_off"]),
                fmt_ratio(ratios["baseline"]),
                fmt_ratio(ratios["hand_torch_dual"]),
                fmt_ratio(machinery),
                f"median <= {TARGET_RATIO:.2f}, Q3 <= {TARGET_UPPER_QUARTILE:.2f}",
                "met" if met else "NOT met",
            ]
        )

    header = [
        "size",
        f"{labels['hand']} us/step",
        f"{labels['library']} us/step",
        f"{labels['baseline']} us/step",
        "hand-written again/hand (A/A control)",
        f"{labels['library']}/hand",
        f"{labels['library']} with public torch calls only/hand",
        f"{labels['library']} with non_finite='off'/hand",
        f"{labels['baseline']}/hand",
        "hand with torch SGD dual/hand (floor)",
        f"{labels['library']}/hand with lean torch calls (machinery only)",
        "target",
        f"{labels['library']} verdict",
    ]
    settings = (
        f"repeats={args.repeats}, steps/block={args.steps_per_block}, warm-up={args.warmup} steps, "
        f"batch={BATCH_SIZE}, primal SGD lr={PRIMAL_LR}, dual SGD lr={DUAL_LR}, device={args.device}"
    )
    print()
    print(text_table(header, rows))
    print(f"({settings}; us/step = median over repeats; ratio = median of per-repeat ratios [IQR])")

    if args.out is not None:
        out = Path(args.out)
        text = "\n".join(
            [
                "# Step overhead: constrained optimizer step vs hand-written Lagrangian step",
                "",
                markdown_table(header, rows),
                "",
                f"{settings}. us/step is the median over repeats of the per-step time of a block; "
                "ratios are medians of per-repeat ratios, with the inter-quartile range in brackets.",
                "",
                *environment_lines([*notes, "torch.set_num_threads(1)"]),
                "",
            ]
        )
        write_atomic(out, text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
