"""Per-step overhead in executed instructions: a noise-free companion of ``step_overhead.py``.

What is measured
    The same methods and problems as ``benchmarks/step_overhead.py`` (hand-written Lagrangian step,
    ``cooper_like``'s ``SimultaneousOptimizer.roll``, the same with only torch's public calls, Cooper
    1.0.1 when importable), each run in its own process under ``valgrind --tool=callgrind``, which counts
    the instructions the CPU executes. A method's per-step count is
    ``(count after warm-up + K steps - count after warm-up) / K``; the ratio is against the hand-written
    step. Instruction counts do not depend on what else the machine is doing (repeat runs agree to a
    fraction of a percent), so the ratio can be read where wall-clock ratios on a shared machine have an
    inter-quartile range of 10-30 %. They are not times: memory stalls and vectorisation weigh
    differently, so this complements the timed benchmark and does not replace it.

Command
    python benchmarks/step_instructions.py [--steps 100] [--out [PATH]]   (needs valgrind)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _common import RESULTS_DIR, environment_lines, import_library, markdown_table, text_table, write_atomic

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = RESULTS_DIR / "step_instructions.md"
WARMUP = 20
METHODS = ("hand", "hand_lean_calls", "library", "library_public_calls", "baseline")

CHILD = """
import sys
sys.path.insert(0, {bench_dir!r})
import torch
torch.set_num_threads(1)
import step_overhead as bench
from _common import import_library
libs = {{"library": import_library("cooper_like")[0]}}
base = import_library("cooper")[0]
if base is not None:
    libs["baseline"] = base
spec = next(s for s in bench.SIZES if s.name == {size!r})
method = bench.build_methods(spec, libs, seed=0)[{method!r}]
for _ in range({warmup} + {steps}):
    method.step()
"""


def count_instructions(method: str, size: str, steps: int) -> int:
    """Instructions executed by a child process that builds ``method`` and runs warm-up + ``steps`` steps."""
    code = CHILD.format(bench_dir=str(BENCH_DIR), size=size, method=method, warmup=WARMUP, steps=steps)
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    match = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"{method}/{size}: callgrind run failed:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def per_step(method: str, size: str, steps: int) -> float:
    return (count_instructions(method, size, steps) - count_instructions(method, size, 0)) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="steps counted after the warm-up (100)")
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=["small", "large"])
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="hand is always run"
    )
    parser.add_argument("--out", nargs="?", const=str(DEFAULT_OUT), default=None, metavar="PATH")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("error: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    wanted = {"hand", *args.methods}
    methods = [
        m for m in METHODS if m in wanted and (m != "baseline" or import_library("cooper")[0] is not None)
    ]
    header = ["size", *(f"{m} instr/step" for m in methods), *(f"{m}/hand" for m in methods[1:])]
    rows = []
    for size in args.sizes:
        counts = {m: per_step(m, size, args.steps) for m in methods}
        print(f"{size}: " + ", ".join(f"{m}={c:,.0f}" for m, c in counts.items()), file=sys.stderr)
        rows.append(
            [
                size,
                *(f"{counts[m]:,.0f}" for m in methods),
                *(f"{counts[m] / counts['hand']:.3f}" for m in methods[1:]),
            ]
        )
    print(text_table(header, rows))
    if args.out is not None:
        lines = [
            "# Step overhead in executed instructions (callgrind)",
            "",
            markdown_table(header, rows),
            "",
            f"Instructions per step after {WARMUP} warm-up steps, counted over {args.steps} steps "
            "(difference of two runs); sizes as in step_overhead.md.",
            "",
            *environment_lines(),
        ]
        write_atomic(Path(args.out), "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
