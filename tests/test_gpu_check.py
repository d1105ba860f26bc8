"""``benchmarks/gpu_check.sh`` works: its CPU mode runs here, with the CUDA parts reported as skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@needs_bash
@pytest.mark.skipif(
    torch.cuda.is_available(), reason="with CUDA the script runs its GPU parts: run it directly"
)
def test_cpu_mode_runs_and_reports_the_cuda_parts_skipped(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (out / "summary.txt").read_text()
    for line in (
        "versions: ran",
        "CUDA tests: ran",
        "step overhead (cuda): skipped (no CUDA)",
        "indexed scale (cuda, 1e6-1e8): skipped (no CUDA)",
        "step overhead (cpu, quick): ran",
        "status 0",
    ):
        assert line in summary, summary
    versions = (out / "versions.txt").read_text()
    assert f"torch {torch.__version__}" in versions
    assert "core torch-call path: lean" in versions  # the pinned torch is a verified version
    tests = (out / "tests.txt").read_text()
    assert "skipped" in tests and "failed" not in tests and "error" not in tests.lower()
    assert "cooper_like/hand" in (out / "step_overhead_cpu.md").read_text()


@needs_bash
def test_a_missing_outdir_is_a_usage_error() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == "usage: bash benchmarks/gpu_check.sh OUTDIR"
