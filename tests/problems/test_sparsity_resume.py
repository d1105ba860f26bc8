"""Crash-safe checkpoints of the sparsity trainer: SIGKILL at a random step, mid-epoch resume, damaged files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from problems.scaffold.checkpoints import CheckpointError, load_checkpoint
from problems.scaffold.resumable import (
    load_latest_checkpoint,
    payload_digest,
    previous_path,
    save_rotating_checkpoint,
)
from problems.sparsity.config import SparsityConfig
from problems.sparsity.train import Run, train

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 12  # 1,438 digits in batches of 128


def tiny(out: Path, **overrides: Any) -> SparsityConfig:
    values: dict[str, Any] = {
        "model": "tiny",
        "dataset": "digits",
        "finetune_epochs": 0,
        "epochs": 3,
        "seed": 3,
        "out": out,
    }
    return SparsityConfig(**{**values, **overrides})


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without what legitimately differs between an interrupted run and an uninterrupted one."""
    config = {k: v for k, v in metrics["config"].items() if k not in ("out", "resume", "checkpoint_every")}
    return {**{k: v for k, v in metrics.items() if k not in ("wall_time_s", "config")}, "config": config}


def assert_same_model(first: Path, second: Path) -> None:
    a, b = load_checkpoint(first / "checkpoint.pt"), load_checkpoint(second / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["problem"]["multipliers"]["density"]["weight"].equal(
        b["problem"]["multipliers"]["density"]["weight"]
    )
    rows = ("train_loss", "test_accuracy", "test_time_density", "multiplier/density", "skipped_steps")
    assert [[r[k] for k in rows] for r in a["history"]] == [[r[k] for k in rows] for r in b["history"]]


class SimulatedCrashError(Exception):
    """Stands for a crash in the middle of an epoch."""


def crash_at(step: int):
    def on_step(run: Run, current: int) -> None:
        if current == step:
            raise SimulatedCrashError(f"crash at step {current}")

    return on_step


def test_a_crash_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    reference = train(tiny(tmp_path / "reference"))
    with pytest.raises(SimulatedCrashError):
        train(tiny(tmp_path / "run", checkpoint_every=4), on_step=crash_at(2 * STEPS_PER_EPOCH - 3))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (state["epoch"], state["batch"], state["step"]) == (1, 8, 20)  # mid-epoch: 8 of 12 batches done
    assert load_checkpoint(previous_path(tmp_path / "run" / "checkpoint.pt"))["step"] == 16
    resumed = train(tiny(tmp_path / "run", checkpoint_every=4, resume=tmp_path / "run"))
    assert comparable(resumed) == comparable(reference)
    assert_same_model(tmp_path / "reference", tmp_path / "run")


@pytest.mark.parametrize("continue_adam", [False, True])
def test_a_crash_in_the_dense_warm_up_resumes_exactly(tmp_path: Path, continue_adam: bool) -> None:
    phases = {"epochs": 3, "warmup_epochs": 2, "continue_adam": continue_adam}
    reference = train(tiny(tmp_path / "reference", **phases))
    with pytest.raises(SimulatedCrashError):
        train(tiny(tmp_path / "run", checkpoint_every=4, **phases), on_step=crash_at(STEPS_PER_EPOCH + 6))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["phase"] == "warmup" and (state["epoch"], state["batch"]) == (1, 4)
    resumed = train(tiny(tmp_path / "run", resume=tmp_path / "run", **phases))
    assert comparable(resumed) == comparable(reference)
    assert_same_model(tmp_path / "reference", tmp_path / "run")


@pytest.mark.parametrize(
    ("schedule", "continue_adam"), [("constant", False), ("cosine", False), ("constant", True)]
)
def test_a_crash_while_fine_tuning_resumes_exactly(
    tmp_path: Path, schedule: str, continue_adam: bool
) -> None:
    phases = {
        "epochs": 2,
        "finetune_epochs": 2,
        "finetune_schedule": schedule,
        "continue_adam": continue_adam,
    }
    reference = train(tiny(tmp_path / "reference", **phases))
    with pytest.raises(SimulatedCrashError):
        config = tiny(tmp_path / "run", checkpoint_every=4, **phases)
        train(config, on_step=crash_at(3 * STEPS_PER_EPOCH + 6))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["phase"] == "finetune" and (state["epoch"], state["batch"]) == (3, 4)
    resumed = train(tiny(tmp_path / "run", resume=tmp_path / "run", **phases))
    assert comparable(resumed) == comparable(reference)
    assert_same_model(tmp_path / "reference", tmp_path / "run")


def launch_cli(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "problems.sparsity", "train", "--model", "tiny", "--dataset", "digits"]
    command += ["--epochs", "2", "--finetune-epochs", "1", "--seed", "3", "--checkpoint-every", "1"]
    command += ["--out", str(out), *extra]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def checkpoint_step(path: Path) -> int:
    try:
        return int(load_checkpoint(path)["step"])
    except (FileNotFoundError, CheckpointError):
        return -1


@pytest.mark.slow  # two fresh interpreters (~30-40 s on a busy machine); .ci/run runs it
def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = train(tiny(tmp_path / "reference", epochs=2, finetune_epochs=1))
    out = tmp_path / "run"
    target = random.Random().randrange(2, 3 * STEPS_PER_EPOCH - 4)
    process = launch_cli(out)
    deadline = time.monotonic() + 240
    while checkpoint_step(out / "checkpoint.pt") < target and process.poll() is None:
        assert time.monotonic() < deadline, "the training run made no progress"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    killed_at = checkpoint_step(out / "checkpoint.pt")
    assert 0 < killed_at < 3 * STEPS_PER_EPOCH, killed_at
    assert not (out / "metrics.json").exists()

    resumed = launch_cli(out, "--resume", str(out))
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr.decode()[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert comparable(metrics) == comparable(reference), f"killed at step {killed_at} (target {target})"
    assert_same_model(tmp_path / "reference", out)


def test_a_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(tmp_path: Path) -> None:
    reference = train(tiny(tmp_path / "reference", epochs=2))
    with pytest.raises(SimulatedCrashError):
        train(tiny(tmp_path / "run", epochs=2, checkpoint_every=5), on_step=crash_at(16))
    latest = tmp_path / "run" / "checkpoint.pt"
    assert load_checkpoint(latest)["step"] == 15 and load_checkpoint(previous_path(latest))["step"] == 12
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # cut short on disk
    with pytest.warns(RuntimeWarning, match=r"skipping damaged checkpoint.*truncated or corrupt"):
        resumed = train(tiny(tmp_path / "run", epochs=2, checkpoint_every=5, resume=tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoint.pt.corrupt").exists()
    assert comparable(resumed) == comparable(reference)
    assert_same_model(tmp_path / "reference", tmp_path / "run")


def flip_byte(path: Path, fraction: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_rotation_keeps_two_verified_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    for step in range(3):
        save_rotating_checkpoint({"step": step, "weights": torch.full((1000,), float(step))}, path)
    assert load_latest_checkpoint(path)[0]["step"] == 2
    assert load_checkpoint(previous_path(path))["step"] == 1
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "checkpoint.prev.pt"}

    # damaged bytes inside the tensor data: the zip still opens, the digest catches it
    flip_byte(path, 0.5)
    with pytest.warns(RuntimeWarning, match="does not match the digest"):
        payload, source = load_latest_checkpoint(path)
    assert (payload["step"], source) == (1, previous_path(path))
    assert not path.exists() and (tmp_path / "checkpoint.pt.corrupt").exists()

    # nothing intact left: a clear error naming the file, never garbage
    flip_byte(previous_path(path), 0.5)
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="no intact checkpoint"):
        load_latest_checkpoint(path, set_aside=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        load_latest_checkpoint(tmp_path / "elsewhere.pt")


def test_digest_covers_every_value(tmp_path: Path) -> None:
    payload = {"a": torch.arange(4, dtype=torch.bfloat16), "b": [1, 2.5, "x", None], "c": {"d": True}}
    digest = payload_digest(payload)
    assert payload_digest({**payload, "sha256": "ignored"}) == digest
    for changed in (
        {**payload, "a": torch.arange(4, dtype=torch.float16)},
        {**payload, "b": [1, 2.5, "y", None]},
        {**payload, "c": {"d": False}},
        {**payload, "e": 0},
    ):
        assert payload_digest(changed) != digest
    save_rotating_checkpoint(payload, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert loaded["sha256"] == digest == payload_digest(loaded)
