"""``python -m problems.l1 {target,path,compare} ...``."""

from problems.l1.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
