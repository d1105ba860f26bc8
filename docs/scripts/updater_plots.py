"""Draw ``docs/img/updaters_disk.png`` from the comparison on ``docs/choosing-an-updater.md``.

The comparison code is taken from the page itself (its first Python block), so the plot and the
table on the page always come from the same code::

    python docs/scripts/updater_plots.py

Needs matplotlib (the ``problems`` extra). The PNG is kept small (about 50 kB).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
PAGE = DOCS / "choosing-an-updater.md"
OUTPUT = DOCS / "img" / "updaters_disk.png"


def comparison_namespace() -> dict[str, Any]:
    """Run the page's first Python block and return its namespace (holds ``trajectories``)."""
    block = re.search(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    if block is None:
        raise RuntimeError(f"no Python block in {PAGE}")
    namespace: dict[str, Any] = {"__name__": "updater_plots"}
    exec(compile(block.group(1), str(PAGE), "exec"), namespace)
    return namespace


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trajectories = comparison_namespace()["trajectories"]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True)
    for name, (violations, multipliers) in trajectories.items():
        steps = range(1, len(violations) + 1)
        top.plot(steps, violations, label=name, linewidth=1.2)
        bottom.plot(steps, multipliers, label=name, linewidth=1.2)
    top.axhline(0.0, color="black", linewidth=0.7)
    bottom.axhline(2**-0.5, color="black", linewidth=0.7, linestyle=":")
    top.set(ylabel=r"violation $\|x\|^2 - 1$", title="Maximise $x_1 + x_2$ in the unit disk")
    bottom.set(xlabel="step", ylabel=r"multiplier $\lambda$ ($\lambda^\star$ dotted)")
    top.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, dpi=72)
    plt.close(figure)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
