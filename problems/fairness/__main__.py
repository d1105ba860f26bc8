"""``python -m problems.fairness train ...``."""

from problems.fairness.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
