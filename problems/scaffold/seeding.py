"""Seeding and capture/restore of the global random number generators.

:func:`rng_state` returns the states of Python's ``random``, NumPy's legacy global generator and
torch's CPU (and CUDA, when available) generators as tensors, ints, floats and dicts only, so a
checkpoint holding it loads with ``torch.load(weights_only=True)``. :func:`set_rng_state`
restores it: the random numbers drawn afterwards are the same as after the capture.
"""

from __future__ import annotations

import numbers
import random
from typing import Any

import numpy as np
import torch

__all__ = ["rng_state", "seed_everything", "set_rng_state"]

_KEYS = ("python", "numpy", "torch")


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    ``seed`` must be an int in ``[0, 2**32)`` (NumPy's legacy seeding range).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed))
    torch.manual_seed(int(seed))  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """Captures the global RNG states in a weights-only-loadable form.

    Returns:
        ``{"python": {"version", "internal", "gauss_next"}, "numpy": {"keys", "pos", "has_gauss",
        "cached_gaussian"}, "torch": ByteTensor}`` plus ``"cuda": [ByteTensor, ...]`` when CUDA
        is available. Mersenne-Twister words are stored as int64 tensors.
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    if name != "MT19937":  # pragma: no cover - NumPy's legacy global generator is always MT19937
        raise RuntimeError(f"unexpected NumPy global generator {name!r}")
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # pragma: no cover - CPU-only test machines
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the RNG states captured by :func:`rng_state` (e.g. after loading a checkpoint)."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from rng_state(), got {type(state).__name__}")
    missing = [key for key in _KEYS if key not in state]
    if missing:
        raise ValueError(f"state is missing the RNG state(s) {missing}; expected keys {list(_KEYS)}")
    try:
        python = state["python"]
        random.setstate(
            (
                int(python["version"]),
                tuple(int(word) for word in python["internal"].tolist()),
                python["gauss_next"],
            )
        )
        numpy = state["numpy"]
        np.random.set_state(
            (
                "MT19937",
                np.asarray(numpy["keys"].numpy(), dtype=np.uint32),
                int(numpy["pos"]),
                int(numpy["has_gauss"]),
                float(numpy["cached_gaussian"]),
            )
        )
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"state is not a valid rng_state() record: {exc!r}") from exc
    if "cuda" in state and torch.cuda.is_available():  # pragma: no cover - CPU-only test machines
        torch.cuda.set_rng_state_all(state["cuda"])
