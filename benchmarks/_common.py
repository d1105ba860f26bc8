"""Helpers shared by the benchmark scripts in this folder (not a benchmark itself).

Imported as ``_common`` by scripts run as files (``python benchmarks/<script>.py``): the
script's folder is then first on ``sys.path``.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def import_library(name: str) -> tuple[ModuleType | None, str]:
    """Import ``name`` (and its ``optim``/``multipliers`` submodules); return (module or None, note)."""
    try:
        module = importlib.import_module(name)
        importlib.import_module(f"{name}.optim")
        importlib.import_module(f"{name}.multipliers")
    except Exception as exc:  # any import-time failure means "not available"
        return None, f"`import {name}` failed ({type(exc).__name__}: {exc})"
    version = getattr(module, "__version__", "unknown")
    return module, f"{name} {version}"


def run_interleaved(
    steps: dict[str, Callable[[], None]],
    repeats: int,
    steps_per_block: int,
    max_repeats: dict[str, int] | None = None,
    progress: Callable[[int], None] | None = None,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Time ``steps`` round-robin and return per-step times in microseconds, one per repeat.

    Each repeat runs one block of ``steps_per_block`` calls of every step function, in an order
    drawn at random per repeat (seeded: the same orders every run), so that no method always runs
    first or right after the same neighbour: a fixed cyclic order was measured to bias two identical
    methods apart by about 3 % (the block after a given neighbour starts with its caches in a given
    state).  The garbage collector runs before each block and is disabled during it; the objects
    alive at the start are frozen (``gc.freeze()``, undone at the end) so that those collections are
    short and short blocks are affordable.
    ``max_repeats[name]`` caps the number of blocks of a slow method: it takes part in the first
    ``max_repeats[name]`` repeats only. ``synchronize`` (e.g. ``torch.cuda.synchronize``) is called
    before each block's clock starts and before it stops, so that a block times the device's work.
    """
    names = list(steps)
    caps = max_repeats or {}
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.freeze()
    try:
        orders = random.Random(0)
        for rep in range(repeats):
            for name in orders.sample(names, len(names)):
                if rep < caps.get(name, repeats):
                    times[name].append(time_block(steps[name], steps_per_block, synchronize))
            if progress is not None:
                progress(rep)
    finally:
        gc.unfreeze()
    return times


def time_block(
    step: Callable[[], None], steps_per_block: int, synchronize: Callable[[], None] | None = None
) -> float:
    """Microseconds per call of ``step`` over one block of ``steps_per_block`` calls, collector off."""
    gc.collect()
    gc.disable()
    try:
        if synchronize is not None:
            synchronize()
        start = time.perf_counter_ns()
        for _ in range(steps_per_block):
            step()
        if synchronize is not None:
            synchronize()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / steps_per_block / 1e3


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot run here (an unknown name, or CUDA without a GPU), else ``None``."""
    try:
        kind = torch.device(device).type
    except RuntimeError as error:
        return f"--device {device!r} is not a torch device ({error})"
    if kind == "cuda" and not torch.cuda.is_available():
        return f"--device {device!r}: CUDA is not available on this machine"
    return None


def device_synchronizer(device: str) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for a CUDA device (timings must wait for the device), else ``None``."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return None


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """Inter-quartile range as a compact ``[q1, q3]`` string (``-`` when too few samples)."""
    if len(values) < 4:
        return "-"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"[{q1:.0f}, {q3:.0f}]"


def peak_rss_mib() -> float:
    """Process-lifetime peak resident set size (``ru_maxrss``) in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def mem_available_bytes(device: str = "cpu") -> int | None:
    """Free memory of ``device``: ``torch.cuda.mem_get_info`` for CUDA, else ``MemAvailable`` from
    ``/proc/meminfo`` when readable (Linux), else None."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return out.stdout.strip() if out.returncode == 0 else "unknown (no commit yet?)"


def _cpu_model() -> str:
    name = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def environment_lines(notes: Sequence[str] = ()) -> list[str]:
    """Markdown bullet lines describing where and how the benchmark ran."""
    uname = platform.uname()
    lines = [
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`",
        f"- git HEAD: {_git_head()}",
        f"- machine: {uname.system} {uname.release} {uname.machine}; processor: {_cpu_model()}; "
        f"logical CPUs: {os.cpu_count()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads: {torch.get_num_threads()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"- CUDA {torch.version.cuda}, device: {torch.cuda.get_device_name()}")
    lines += [f"- {note}" for note in notes]
    return lines


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)
