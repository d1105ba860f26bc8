"""Step time of per-sample constraints (``IndexedMultiplier``) as the number of constraints N grows.

What is measured
    One constraint per training example, ``loss_i - EPS <= 0``, held by an
    ``IndexedMultiplier(num_constraints=N)``, for N in {1e3, 1e5, 1e6, 1e7} (and 1e8 with
    ``--with-1e8`` when memory allows).  Each step observes a batch of 128 examples drawn
    uniformly from [0, N); the model is an MLP 32-64-1 (ReLU) with squared-error per-sample
    losses; ``ConstraintState(violation=loss_i - EPS, constraint_features=idx)``; objective:
    the batch-mean loss.  Example i has the features of row ``i % 4096`` of a fixed random
    pool, so that data memory does not grow with N (batches are drawn before timing).

    A timed step is one full ``SimultaneousOptimizer.roll()``: model forward and backward,
    primal ``torch.optim.SGD`` step, dual step and multiplier projection.  Dual updaters:

    * ``cooper_like`` with ``torch.optim.SGD(lr, maximize=True)`` and with
      ``cooper_like.optim.nuPI(lr, Kp=KP, Ki=1, maximize=True)``, with the multiplier's
      default (sparse) gradients and, when ``IndexedMultiplier`` accepts the keyword in
      ``DENSE_GRAD_KWARGS``, with dense gradients (expected to cost O(N) per step; no target);
    * Cooper 1.0.1 with SGD as baseline when ``import cooper`` works (its projection touches
      every entry; its repeats are capped at N >= 1e6 and it is skipped at 1e8).

    For every N, the configurations and a reference instance of each at N = 1e3 are timed
    round-robin (blocks of ``--steps-per-block`` steps, order drawn at random per repeat; the configurations
    with a target form one round-robin, the O(N) ones, dense mode and baseline, another) with
    ``torch.set_num_threads(1)``.  Reported: median per-step time over repeats, the ratio
    time(N) / time(1e3) as the median of per-repeat ratios against the reference timed in the
    same round (IQR in brackets), the bytes held by the multiplier (weight, gradient and dual
    optimizer state), and the process peak RSS (``ru_maxrss``, a high-water mark) after each N.
    Before timing, the configurations are checked to agree after a few steps at N = 1e3
    (``cooper_like`` vs Cooper for SGD and nuPI, dense vs sparse gradients for SGD).

Target
    For ``cooper_like`` with sparse gradients (SGD and nuPI): time(1e7) / time(1e3) <= 1.2.

Command
    python benchmarks/indexed_scale.py [--quick] [--with-1e8] [--repeats 20] [--out [PATH]]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import itertools
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
    mem_available_bytes,
    peak_rss_mib,
    run_interleaved,
    text_table,
    write_atomic,
)
from torch import nn

TARGET_RATIO = 1.2
TARGET_N = 10**7
REFERENCE_N = 10**3
DEFAULT_NS = (10**3, 10**5, 10**6, 10**7)
BATCH_SIZE = 128
IN_FEATURES = 32
HIDDEN = 64
POOL_SIZE = 4096
NUM_BATCHES = 64  # distinct pre-drawn batches, cycled through
EPS = 0.5
PRIMAL_LR = 1e-2
DUAL_LR = 1e-2
KP = 1.0
# The one place that says how to ask IndexedMultiplier for dense gradients.
DENSE_GRAD_KWARGS: dict[str, Any] = {"sparse_grad": False}
DEFAULT_OUT = RESULTS_DIR / "indexed_scale.md"


@dataclass(frozen=True)
class Config:
    role: str  # "library" or "baseline"
    updater: str  # "SGD" or "nuPI"
    dense: bool

    def label(self, names: dict[str, str]) -> str:
        mode = "dense grad" if self.dense else "default grad"
        return f"{names[self.role]} {self.updater} ({mode})"

    @property
    def has_target(self) -> bool:
        return self.role == "library" and not self.dense


def multiplier_kwargs(num_constraints: int, dense: bool, device: torch.device) -> dict[str, Any]:
    return {"num_constraints": num_constraints, "device": device, **(DENSE_GRAD_KWARGS if dense else {})}


def dense_mode_note(lib: ModuleType) -> str | None:
    """None if ``lib``'s IndexedMultiplier accepts ``DENSE_GRAD_KWARGS``, else why not."""
    try:
        params = inspect.signature(lib.multipliers.IndexedMultiplier).parameters
    except (TypeError, ValueError) as exc:
        return f"cannot inspect IndexedMultiplier signature ({exc})"
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = [k for k in DENSE_GRAD_KWARGS if k not in params]
    if missing and not accepts_var_kw:
        return f"IndexedMultiplier{inspect.signature(lib.multipliers.IndexedMultiplier)} has no {missing}"
    return None


class Data:
    """A pool of POOL_SIZE examples; example i of N uses pool row ``i % POOL_SIZE``."""

    def __init__(self, seed: int, device: str = "cpu") -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(POOL_SIZE, IN_FEATURES, generator=gen)
        self.y = torch.randn(POOL_SIZE, generator=gen)
        self.seed, self.device = seed, device

    def batches(self, num_constraints: int) -> list[dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed + num_constraints)
        out = []
        for _ in range(NUM_BATCHES):
            idx = torch.randint(0, num_constraints, (BATCH_SIZE,), generator=gen)
            row = idx % POOL_SIZE
            batch = {"x": self.x[row], "y": self.y[row], "idx": idx}
            out.append({key: value.to(self.device) for key, value in batch.items()})
        return out


def make_model(seed: int, device: str = "cpu") -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1)).to(device)


def make_cmp(lib: ModuleType, model: nn.Sequential, multiplier: Any) -> Any:
    """A per-sample-constraint CMP built from library ``lib`` (``cooper_like`` or ``cooper``)."""

    class PerSampleCMP(lib.ConstrainedMinimizationProblem):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.constraint = lib.Constraint(
                constraint_type=lib.ConstraintType.INEQUALITY, multiplier=multiplier
            )

        def compute_cmp_state(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> Any:
            per_sample = (self.model(x).squeeze(-1) - y).pow(2)
            state = lib.ConstraintState(violation=per_sample - EPS, constraint_features=idx)
            return lib.CMPState(loss=per_sample.mean(), observed_constraints={self.constraint: state})

    return PerSampleCMP()


class Instance:
    """One configuration at one N: model, CMP, optimizers and a cycle of batches."""

    def __init__(
        self,
        lib: ModuleType,
        config: Config,
        num_constraints: int,
        model: nn.Sequential,
        batches: list[dict[str, torch.Tensor]],
    ) -> None:
        self.model = model
        device = batches[0]["idx"].device
        multiplier = lib.multipliers.IndexedMultiplier(
            **multiplier_kwargs(num_constraints, config.dense, device)
        )
        self.cmp = make_cmp(lib, model, multiplier)
        dual_params = list(self.cmp.dual_parameters())
        self.dual_optimizer: torch.optim.Optimizer
        if config.updater == "SGD":
            self.dual_optimizer = torch.optim.SGD(dual_params, lr=DUAL_LR, maximize=True)
        else:
            self.dual_optimizer = lib.optim.nuPI(dual_params, lr=DUAL_LR, Kp=KP, Ki=1.0, maximize=True)
        self.optimizer = lib.optim.SimultaneousOptimizer(
            cmp=self.cmp,
            primal_optimizers=torch.optim.SGD(model.parameters(), lr=PRIMAL_LR),
            dual_optimizers=self.dual_optimizer,
        )
        self._batches: Iterator[dict[str, torch.Tensor]] = itertools.cycle(batches)

    def step(self) -> None:
        self.optimizer.roll(compute_cmp_state_kwargs=next(self._batches))

    def multipliers(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.cmp.dual_parameters()])

    def dual_bytes(self) -> int:
        """Bytes of the multiplier weight, its gradient and the dual optimizer state (dense tensors)."""
        total = 0
        for p in self.cmp.dual_parameters():
            tensors = [p, p.grad, *self.dual_optimizer.state.get(p, {}).values()]
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                    total += t.numel() * t.element_size()
        return total


def check_agreement(
    libs: dict[str, ModuleType], configs: list[Config], data: Data, steps: int, seed: int
) -> list[str]:
    """Same batches and initial weights: the multipliers and weights must agree after ``steps`` steps."""
    batches = data.batches(REFERENCE_N)
    pairs: list[tuple[Config, Config]] = []
    if "baseline" in libs:
        pairs += [(Config("library", u, False), Config("baseline", u, False)) for u in ("SGD", "nuPI")]
    if Config("library", "SGD", True) in configs:
        # Not for nuPI: with dense gradients it also updates unobserved entries (another algorithm).
        pairs.append((Config("library", "SGD", False), Config("library", "SGD", True)))
    notes = []
    names = {role: lib.__name__ for role, lib in libs.items()}
    for first, second in pairs:
        runs = []
        for config in (first, second):
            inst = Instance(libs[config.role], config, REFERENCE_N, make_model(seed, data.device), batches)
            for _ in range(steps):
                inst.step()
            runs.append(inst)
        lam_a, lam_b = runs[0].multipliers(), runs[1].multipliers()
        assert lam_a.shape == lam_b.shape, f"multiplier shapes differ: {lam_a.shape} vs {lam_b.shape}"
        lam_diff = float((lam_a - lam_b).abs().max())
        param_diff = max(
            float((a - b).abs().max()) for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters())
        )
        text = (
            f"{first.label(names)} vs {second.label(names)}: {steps} steps, "
            f"{int((lam_a > 0).sum())} multipliers > 0, max|dlambda|={lam_diff:.1e}, "
            f"max|dparam|={param_diff:.1e}"
        )
        ok = torch.allclose(lam_a, lam_b, rtol=1e-4, atol=1e-5) and param_diff <= 1e-4
        assert ok, f"agreement check failed: {text}"
        notes.append(text)
    return notes


def fmt_ratio(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) < 4:
        return f"{median(values):.2f}"
    qs = sorted(values)
    return f"{median(values):.2f} [{qs[len(qs) // 4]:.2f}, {qs[(3 * len(qs)) // 4]:.2f}]"


def estimated_bytes(num_constraints: int, configs: list[Config]) -> int:
    """Rough upper bound of the memory needed to hold every configuration at N at once."""
    floats_per_entry = {("SGD", False): 2, ("nuPI", False): 5, ("SGD", True): 3, ("nuPI", True): 6}
    return sum(4 * num_constraints * floats_per_entry[(c.updater, c.dense)] for c in configs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="round-robin repeats (default 20)")
    parser.add_argument(
        "--steps-per-block", type=int, default=None, help="steps per timed block (default 20)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per instance (default 10)")
    parser.add_argument("--check-steps", type=int, default=None, help="steps of the agreement check (20)")
    parser.add_argument(
        "--baseline-max-repeats",
        type=int,
        default=5,
        help="cap on the baseline's repeats at N >= 1e6 (default 5)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 repeats of 5 steps")
    parser.add_argument("--with-1e8", action="store_true", help="also N = 1e8 (needs several GiB)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="override the list of N (1e3 is always added)"
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
        help=f"write the tables as markdown (default: {DEFAULT_OUT.relative_to(DEFAULT_OUT.parents[2])})",
    )
    parser.add_argument("--library-module", default="cooper_like", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-module", default="cooper", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, full, small in (
        ("repeats", 20, 5),
        ("steps_per_block", 20, 5),
        ("warmup", 10, 5),
        ("check_steps", 20, 10),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    sizes = list(args.sizes) if args.sizes else list(DEFAULT_NS)
    if args.with_1e8:
        sizes.append(10**8)
    args.sizes = sorted(set(sizes) | {REFERENCE_N})
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
    names = {"library": args.library_module, "baseline": args.baseline_module}
    notes = [f"library: {lib_note}"]
    base, base_note = import_library(args.baseline_module)
    if base is None:
        notes.append(f"baseline skipped: {base_note}")
    else:
        libs["baseline"] = base
        notes.append(f"baseline: {base_note}")

    configs = [Config("library", "SGD", False), Config("library", "nuPI", False)]
    why_no_dense = dense_mode_note(lib)
    if why_no_dense is None:
        configs += [Config("library", "SGD", True), Config("library", "nuPI", True)]
        notes.append(f"dense-gradient mode: IndexedMultiplier(..., {DENSE_GRAD_KWARGS})")
    else:
        notes.append(f"dense-gradient mode skipped: {why_no_dense}")
    if "baseline" in libs:
        configs.append(Config("baseline", "SGD", False))
    for note in notes:
        print(f"note: {note}")

    data = Data(args.seed, args.device)
    for text in check_agreement(libs, configs, data, args.check_steps, args.seed):
        print(f"check OK: {text}")
        notes.append(f"agreement check OK: {text}")

    def build(config: Config, num_constraints: int) -> Instance:
        inst = Instance(
            libs[config.role],
            config,
            num_constraints,
            make_model(args.seed, args.device),
            data.batches(num_constraints),
        )
        for _ in range(args.warmup):
            inst.step()
        return inst

    refs = {c: build(c, REFERENCE_N) for c in configs}
    rows: list[list[str]] = []
    summary: dict[Config, str] = {}
    for n in args.sizes:
        active = [c for c in configs if not (c.role == "baseline" and n >= 10**8)]
        if n >= 10**8 and "baseline" in libs:
            notes.append(f"N={n:.0e}: baseline skipped (its projection touches every entry)")
        avail = mem_available_bytes(args.device)
        need = estimated_bytes(n, active)
        if avail is not None and need > 0.7 * avail:
            msg = f"N={n:.0e} skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
            print(f"note: {msg}")
            notes.append(msg)
            continue
        print(f"N={n:.0e}: building {len(active)} configurations", file=sys.stderr)
        try:
            insts = refs if n == REFERENCE_N else {c: build(c, n) for c in active}
            times: dict[str, list[float]] = {}
            # Configurations with a target run in their own round-robin, away from the O(N) ones
            # (dense gradients, the baseline), whose large allocations per step perturb their neighbours.
            for group in ([c for c in active if c.has_target], [c for c in active if not c.has_target]):
                steps: dict[str, Callable[[], None]] = {}
                caps: dict[str, int] = {}
                for c in group:
                    steps[f"N:{c}"] = insts[c].step
                    if n != REFERENCE_N:
                        steps[f"ref:{c}"] = refs[c].step
                    if c.role == "baseline" and n >= 10**6:
                        caps[f"N:{c}"] = caps[f"ref:{c}"] = min(args.baseline_max_repeats, args.repeats)
                if steps:
                    times |= run_interleaved(
                        steps,
                        args.repeats,
                        args.steps_per_block,
                        max_repeats=caps,
                        synchronize=device_synchronizer(args.device),
                    )
        except (MemoryError, RuntimeError) as exc:
            msg = f"N={n:.0e} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            print(f"note: {msg}")
            notes.append(msg)
            insts = {}
            gc.collect()
            continue
        rss = peak_rss_mib()
        for c in active:
            t = times[f"N:{c}"]
            ref = times.get(f"ref:{c}", t)
            ratios = [a / b for a, b in zip(t, ref)]
            rows.append(
                [
                    f"{n:.0e}",
                    c.label(names),
                    f"{median(t):.0f}",
                    f"{median(ref):.0f}",
                    fmt_ratio(ratios),
                    str(len(t)),
                    f"{insts[c].dual_bytes() / 2**20:.1f}",
                    f"{rss:.0f}",
                ]
            )
            if n == TARGET_N:
                summary[c] = f"{median(ratios):.2f}"
        print(text_table(HEADER, [r for r in rows if r[0] == f"{n:.0e}"]), file=sys.stderr, flush=True)
        if n != REFERENCE_N:
            del insts
        gc.collect()

    summary_header = ["configuration", f"ratio at N={TARGET_N:.0e}", "target", "verdict"]
    summary_rows = []
    for c in configs:
        value = summary.get(c)
        if c.has_target:
            verdict = "n/a" if value is None else ("met" if float(value) <= TARGET_RATIO else "NOT met")
            target = f"<= {TARGET_RATIO}"
        else:
            verdict, target = "-", "none (reference / O(N) by design)" if c.dense else "none (baseline)"
        summary_rows.append([c.label(names), value or "n/a", target, verdict])

    settings = (
        f"repeats={args.repeats} (baseline capped at {args.baseline_max_repeats} for N >= 1e6), "
        f"steps/block={args.steps_per_block}, warm-up={args.warmup}, batch={BATCH_SIZE}, "
        f"model MLP {IN_FEATURES}-{HIDDEN}-1, dual lr={DUAL_LR}, nuPI Kp={KP} Ki=1, device={args.device}"
    )
    print()
    print(text_table(HEADER, rows))
    print()
    print(text_table(summary_header, summary_rows))
    print(f"({settings})")
    for note in notes:
        print(f"note: {note}")

    if args.out is not None:
        out = Path(args.out)
        text = "\n".join(
            [
                "# IndexedMultiplier scaling: step time vs number of per-sample constraints N",
                "",
                markdown_table(HEADER, rows),
                "",
                markdown_table(summary_header, summary_rows),
                "",
                f"{settings}. us/step: median over repeats of the per-step time of a block; "
                "ratio: median over repeats of time(N) / time(1e3 reference timed in the same round), "
                "IQR in brackets; dual MiB: multiplier weight + gradient + dual optimizer state; "
                "peak RSS: process high-water mark (ru_maxrss) after the N row was timed.",
                "",
                *environment_lines([*notes, "torch.set_num_threads(1)"]),
                "",
            ]
        )
        write_atomic(out, text)
        print(f"wrote {out}")
    return 0


HEADER = [
    "N",
    "configuration",
    "us/step",
    "us/step at 1e3",
    "ratio vs 1e3",
    "repeats",
    "dual MiB",
    "peak RSS MiB",
]


if __name__ == "__main__":
    sys.exit(main())
