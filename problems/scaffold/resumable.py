"""Crash-safe checkpoints for resumable training: a verified latest checkpoint and the one before it.

A trainer saves with :func:`save_rotating_checkpoint` and resumes with :func:`load_latest_checkpoint`:

* Every write is atomic (:func:`~problems.scaffold.checkpoints.save_checkpoint`: temporary file,
  ``fsync``, rename). Before the new ``checkpoint.pt`` replaces the old one, the old one is kept as
  ``checkpoint.prev.pt`` (a hard link, so there is no moment without a complete checkpoint on disk).
* Every checkpoint carries a SHA-256 digest of its content (tensor bytes, dtypes, shapes, plain values).
  A file cut short is rejected by the zip reader; a file with damaged bytes inside loads, but its
  digest no longer matches. Either way it is reported, set aside as ``<name>.corrupt``, and the
  previous checkpoint is used: a damaged file is never loaded as if it were good.

Both files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from problems.scaffold.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "DIGEST_KEY",
    "checkpoint_candidates",
    "has_checkpoint",
    "load_latest_checkpoint",
    "payload_digest",
    "previous_path",
    "remove_stale_temporaries",
    "save_rotating_checkpoint",
]

DIGEST_KEY = "sha256"


def previous_path(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def checkpoint_candidates(path: Path) -> list[Path]:
    """The checkpoint files to try, newest first: ``path`` then its previous version."""
    return [path, previous_path(path)]


def has_checkpoint(path: Path) -> bool:
    """Whether ``path`` or its previous version exists (a run can be resumed)."""
    return any(candidate.is_file() for candidate in checkpoint_candidates(path))


def _update(digest: Any, value: Any) -> None:
    """Feed a canonical encoding of ``value`` (nested containers, tensors, scalars) into ``digest``."""
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:  # sparse: its (uncoalesced) indices and values
            digest.update(f"sparse{tuple(value.shape)}".encode())
            _update(digest, value._indices())
            _update(digest, value._values())
            return
        digest.update(f"tensor:{value.dtype}:{tuple(value.shape)}:".encode())
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)}(".encode())
        for key, item in value.items():
            digest.update(repr(key).encode() + b"=")
            _update(digest, item)
        digest.update(b")")
    elif isinstance(value, (list, tuple)):
        digest.update(f"seq{len(value)}(".encode())
        for item in value:
            _update(digest, item)
        digest.update(b")")
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of everything in ``payload`` except its own digest entry."""
    digest = hashlib.sha256()
    _update(digest, {key: value for key, value in payload.items() if key != DIGEST_KEY})
    return digest.hexdigest()


def save_rotating_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Save ``payload`` (plus its digest) atomically at ``path``, keeping the current one as the previous.

    ``payload`` must be weights-only loadable (tensors, plain containers and values).
    """
    path = Path(path)
    if path.is_file():
        staged = path.with_name(f".{previous_path(path).name}.staged")
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        try:
            os.link(path, staged)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, staged)
        os.replace(staged, previous_path(path))
    return save_checkpoint({**payload, DIGEST_KEY: payload_digest(payload)}, path)


def verified(path: Path) -> dict[str, Any]:
    """Load ``path`` (weights only) and check its digest; raise :class:`CheckpointError` if it is damaged."""
    payload = load_checkpoint(path)
    if not isinstance(payload, dict) or DIGEST_KEY not in payload:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no {DIGEST_KEY!r} digest: not written by this trainer"
        )
    if payload_digest(payload) != payload[DIGEST_KEY]:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its content does not match the digest written with it"
        )
    return payload


def load_latest_checkpoint(path: Path, *, set_aside: bool = True) -> tuple[dict[str, Any], Path]:
    """The newest intact checkpoint among ``path`` and its previous version, and the file it came from.

    A damaged file is reported with a :class:`RuntimeWarning` naming it and the reason, and (with
    ``set_aside``) renamed to ``<name>.corrupt`` so that it is neither loaded nor rotated again.

    Raises:
        FileNotFoundError: neither file exists.
        CheckpointError: every existing file is damaged (the message gives each reason).
    """
    path = Path(path)
    problems: list[str] = []
    for candidate in checkpoint_candidates(path):
        if not candidate.is_file():
            continue
        try:
            payload = verified(candidate)
        except CheckpointError as error:
            problems.append(str(error))
            warnings.warn(
                f"skipping damaged checkpoint: {error}; trying the previous checkpoint",
                RuntimeWarning,
                stacklevel=2,
            )
            if set_aside:
                with contextlib.suppress(OSError):
                    os.replace(candidate, candidate.with_name(candidate.name + ".corrupt"))
            continue
        return payload, candidate
    if not problems:
        raise FileNotFoundError(
            f"no checkpoint to resume from: neither {str(path)!r} nor its previous version exists"
        )
    raise CheckpointError("no intact checkpoint to resume from: " + "; ".join(problems))


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files that a killed writer left next to ``path`` (single writer only)."""
    path = Path(path)
    for pattern in (f".{path.name}.*.tmp", f".{previous_path(path).name}.staged"):
        for stale in path.parent.glob(pattern):
            with contextlib.suppress(OSError):
                stale.unlink()
