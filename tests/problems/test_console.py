"""The ``cooper-like`` console script dispatches to the problems' CLIs."""

from __future__ import annotations

import pytest

from problems.cli import main


def test_help_lists_the_installed_problems(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "sparsity" in out and "l1" in out


def test_unknown_problem_exits_2_naming_it(capsys) -> None:
    assert main(["nope"]) == 2
    assert "unknown problem 'nope'" in capsys.readouterr().err


def test_dispatches_to_the_problem_cli(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sparsity", "train", "--target-density", "1.5"])
    assert exit_info.value.code == 2
    assert "target_density" in capsys.readouterr().err
