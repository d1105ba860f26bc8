"""The ``cooper-like`` console script: ``cooper-like PROBLEM COMMAND ...`` runs ``python -m problems.PROBLEM COMMAND ...``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

PROBLEMS = {
    "sparsity": "controlled L0 sparsity with hard-concrete gates (train, export, sweep)",
    "l1": "l1 sparsity at a prescribed level and the l1 regularization path (target, path, compare)",
    "fairness": "demographic parity / equal opportunity / equalized odds on Adult (train)",
    "rates": "rate constraints: Neyman-Pearson classification (neyman-pearson)",
    "feasible": "feasible learning: one constraint per training example (train)",
}


def available() -> dict[str, str]:
    """The problems whose package is installed."""
    found = {}
    for name, summary in PROBLEMS.items():
        try:
            importlib.import_module(f"problems.{name}.cli")
        except ModuleNotFoundError:
            continue
        found[name] = summary
    return found


def usage(problems: dict[str, str]) -> str:
    lines = [
        "usage: cooper-like PROBLEM COMMAND [options]   (cooper-like PROBLEM --help for the flags)",
        "",
        "problems:",
    ]
    lines += [f"  {name:<10} {summary}" for name, summary in problems.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    problems = available()
    if not arguments or arguments[0] in ("-h", "--help"):
        sys.stdout.write(usage(problems))
        return 0
    name, rest = arguments[0], arguments[1:]
    if name not in problems:
        sys.stderr.write(f"cooper-like: unknown problem {name!r}\n\n" + usage(problems))
        return 2
    module = importlib.import_module(f"problems.{name}.cli")
    sys.argv[0] = f"cooper-like {name}"
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
