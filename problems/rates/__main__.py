"""``python -m problems.rates neyman-pearson ...``."""

from problems.rates.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
