"""Every Python block of README.md runs, and the quickstart block is examples/quickstart.py."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_blocks() -> None:
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"block_{index}.py"
    script.write_text(BLOCKS[index])
    runpy.run_path(str(script), run_name="__main__")


def test_quickstart_block_is_the_example_file() -> None:
    assert (ROOT / "examples" / "quickstart.py").read_text() in BLOCKS


def test_ci_runs_the_readme_test_command() -> None:
    commands = [
        line for line in README.splitlines() if line.startswith("python -m pip install torch==2.13.0")
    ]
    assert len(commands) == 2 and "pytest" in commands[1]
    assert (
        "grep -m1 -E '^python -m pip install torch==2\\.13\\.0 .*pytest' README.md"
        in (ROOT / ".ci" / "run").read_text()
    )
