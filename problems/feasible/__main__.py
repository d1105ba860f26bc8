"""``python -m problems.feasible train ...``."""

from problems.feasible.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
