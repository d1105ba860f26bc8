"""Tests of the trainer scaffolding: config, metrics log and its reader, plots, checkpoints, seeding, progress."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
import pytest
import torch

from problems.scaffold import checkpoints, metrics_log, plots, progress
from problems.scaffold.checkpoints import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from problems.scaffold.config import (
    ConfigError,
    TrainConfig,
    build_parser,
    config_from_argv,
    parse_config,
)
from problems.scaffold.metrics_log import MetricsLogger, read_metrics
from problems.scaffold.seeding import rng_state, seed_everything, set_rng_state

# --------------------------------------------------------------------------------------- config


def test_train_config_defaults_and_validation_names_the_field() -> None:
    config = TrainConfig()
    assert (config.seed, config.epochs, config.batch_size, config.log_every) == (0, 10, 128, 50)
    assert isinstance(config.out, Path)
    for field, value in [("seed", -1), ("epochs", 0), ("batch_size", 0), ("log_every", 0)]:
        with pytest.raises(pydantic.ValidationError, match=field):
            TrainConfig.model_validate({field: value})
    with pytest.raises(pydantic.ValidationError, match="batch_size"):
        config.batch_size = -3  # validate_assignment
    with pytest.raises(pydantic.ValidationError, match="epoch"):
        TrainConfig(epoch=3)  # type: ignore[call-arg]  # extra="forbid"


def test_parse_config_converts_errors_to_a_clean_message() -> None:
    config = parse_config(TrainConfig, {"epochs": "3", "batch_size": None, "out": "/tmp/x"})
    assert config.epochs == 3 and config.batch_size == 128 and config.out == Path("/tmp/x")
    with pytest.raises(ConfigError) as info:
        parse_config(TrainConfig, {"batch_size": "0", "seed": "abc", "colour": "red"})
    message = str(info.value)
    assert message.startswith("invalid TrainConfig: ")
    assert "batch_size: Input should be greater than or equal to 1 (got '0')" in message
    assert "seed:" in message and "'abc'" in message
    assert "colour: unknown option" in message
    assert len(info.value.errors) == 3
    with pytest.raises(TypeError, match="model_cls must be a pydantic BaseModel subclass, got <class 'int'>"):
        parse_config(int, {})  # type: ignore[type-var]


class _ProblemConfig(TrainConfig):
    """A problem config with a literal, a boolean and an optional float."""

    method: Literal["l0", "magnitude"] = "l0"
    groups: Literal[1, 2] = 1
    verbose: bool = False
    target: float | None = pydantic.Field(default=None, gt=0, lt=1, description="target density")


def test_build_parser_and_config_from_argv() -> None:
    parser = build_parser(_ProblemConfig)
    help_text = parser.format_help()
    assert "--batch-size" in help_text and "--no-verbose" in help_text and "target density" in help_text
    config = config_from_argv(
        _ProblemConfig,
        ["--epochs", "2", "--method", "magnitude", "--groups", "2", "--verbose", "--target", "0.3"],
    )
    assert (config.epochs, config.method, config.groups, config.verbose, config.target) == (
        2,
        "magnitude",
        2,
        True,
        0.3,
    )
    assert config_from_argv(_ProblemConfig, []) == _ProblemConfig()
    with pytest.raises(TypeError, match="model_cls must be a pydantic BaseModel subclass"):
        build_parser(dict)  # type: ignore[arg-type]


def test_config_from_argv_exits_2_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        config_from_argv(_ProblemConfig, ["--target", "1.5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "target: Input should be less than 1 (got '1.5')" in err
    with pytest.raises(SystemExit) as info:
        config_from_argv(_ProblemConfig, ["--groups", "3"])
    assert info.value.code == 2
    assert "invalid choice '3'" in capsys.readouterr().err


def test_config_from_argv_ignores_extra_parser_options() -> None:
    parser = build_parser(TrainConfig)
    parser.add_argument("--dry-run", action="store_true")
    config = config_from_argv(TrainConfig, ["--dry-run", "--seed", "4"], parser=parser)
    assert config.seed == 4


# ----------------------------------------------------------------------------------- checkpoints


def test_save_and_load_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ckpt.pt"
    state: dict[str, Any] = {
        "model": torch.nn.Linear(2, 2).state_dict(),
        "step": 7,
        "history": [1.0, 2.0],
        "name": "x",
    }
    assert save_checkpoint(state, path) == path
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["history"] == [1.0, 2.0] and loaded["name"] == "x"
    torch.testing.assert_close(loaded["model"]["weight"], state["model"]["weight"])
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self) -> Any:
            raise RuntimeError("boom halfway through")

    with pytest.raises(RuntimeError, match="boom halfway through"):
        save_checkpoint({"step": 2, "big": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_atomic_write_keeps_old_file_when_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_text(path, '{"old": true}')

    def failing_replace(src: str, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, '{"new": true}')
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_write_text_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.txt"
    atomic_write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~checkpoints._UMASK)
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        atomic_write_text(path, b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        atomic_write_bytes(path, "x")  # type: ignore[arg-type]
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        atomic_write_text(tmp_path, "x")


def test_load_checkpoint_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(missing)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt.*empty"):
        load_checkpoint(empty)
    good = tmp_path / "good.pt"
    save_checkpoint({"w": torch.arange(1000.0)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt.*truncated or corrupt"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_checkpoint(garbage)


class _Opaque:
    """An arbitrary class: not loadable with weights_only=True."""

    def __init__(self) -> None:
        self.value = 3


def test_load_checkpoint_is_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "opaque.pt"
    torch.save({"obj": _Opaque()}, path)
    with pytest.raises(CheckpointError, match=r"opaque\.pt.*weights_only=True"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------------- metrics log


def test_metrics_logger_csv_and_jsonl(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path / "run", tensorboard=False) as logger:
        logger.log(step=0, loss=1.5, density=torch.tensor(0.75))
        logger.log(step=1, loss=np.float32(0.5), density=0.5, phase="train")
        logger.log(step=2, loss=float("nan"), lr=np.int64(3))
        assert logger.columns == ["step", "loss", "density", "phase", "lr"]
        # Before close, the streamed CSV has the columns of the first row only and stays valid.
        with open(logger.csv_path, newline="") as handle:
            assert next(csv.reader(handle)) == ["step", "loss", "density"]
    jsonl = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert jsonl == [
        {"step": 0, "loss": 1.5, "density": 0.75},
        {"step": 1, "loss": 0.5, "density": 0.5, "phase": "train"},
        {"step": 2, "loss": None, "lr": 3},
    ]
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["step", "loss", "density", "phase", "lr"],
        ["0", "1.5", "0.75", "", ""],
        ["1", "0.5", "0.5", "train", ""],
        ["2", "nan", "", "", "3"],
    ]
    assert logger.closed
    logger.close()  # idempotent
    assert logger.rows[2]["lr"] == 3
    with pytest.raises(RuntimeError, match="is closed"):
        logger.log(step=3, loss=1.0)


def test_metrics_logger_without_new_keys_keeps_streamed_csv(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False, csv_name="m.csv", jsonl_name="m.jsonl")
    for step in range(3):
        logger.log(step=step, loss=float(step))
    logger.flush()
    assert (tmp_path / "m.csv").read_text().splitlines() == ["step,loss", "0,0.0", "1,1.0", "2,2.0"]
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 3
    logger.close()
    assert "closed" in repr(logger)


def test_metrics_logger_rejects_bad_input(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        with pytest.raises(ValueError, match="step must be an int >= 0, got -1"):
            logger.log(step=-1, loss=1.0)
        with pytest.raises(ValueError, match=r"step must be an int >= 0, got 1\.5"):
            logger.log(step=1.5, loss=1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"log\(step=0\) needs at least one metric"):
            logger.log(step=0)
        with pytest.raises(
            ValueError, match="metric 'w' must be a scalar, got a tensor/array with 3 elements"
        ):
            logger.log(step=0, w=torch.ones(3))
        with pytest.raises(
            TypeError, match="metric 'cfg' must be a number, a string or a one-element tensor"
        ):
            logger.log(step=0, cfg={"a": 1})
        assert logger.rows == []
    with pytest.raises(ValueError, match="tensorboard must be True, False or None, got 'yes'"):
        MetricsLogger(tmp_path, tensorboard="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="csv_name and jsonl_name must differ, both are 'x'"):
        MetricsLogger(tmp_path, csv_name="x", jsonl_name="x")


def test_metrics_logger_tensorboard_auto_and_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_log, "tensorboard_available", lambda: False)
    with MetricsLogger(tmp_path / "auto") as logger:
        assert not logger.tensorboard
    with pytest.raises(ImportError, match="tensorboard=True but the 'tensorboard' package is not installed"):
        MetricsLogger(tmp_path / "required", tensorboard=True)


@pytest.mark.skipif(not metrics_log.tensorboard_available(), reason="tensorboard is not installed")
def test_metrics_logger_writes_tensorboard_events(tmp_path: Path) -> None:  # pragma: no cover
    with MetricsLogger(tmp_path, tensorboard=True) as logger:
        logger.log(step=0, loss=1.0, phase="train")
    assert any((tmp_path / "tensorboard").iterdir())


def write_log(directory: Path) -> Path:
    """A three-step log: a column that starts late, a NaN, a string."""
    with MetricsLogger(directory, tensorboard=False) as logger:
        logger.log(0, loss=1.0, **{"multiplier/rate": 0.0, "violation/rate": 0.4})
        logger.log(
            1, loss=0.8, **{"multiplier/rate": 0.2, "violation/rate": 0.1, "strict_violation/rate": 0.0}
        )
        logger.log(2, loss=float("nan"), **{"multiplier/rate": 0.25, "violation/rate": -0.05, "note": "ok"})
    return directory


def test_read_metrics_jsonl_csv_and_directory(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run")
    from_jsonl = read_metrics(run / "metrics.jsonl")
    from_csv = read_metrics(str(run / "metrics.csv"))
    assert read_metrics(run) == from_jsonl  # a directory prefers the JSON lines
    assert [row["step"] for row in from_jsonl] == [0, 1, 2]
    assert from_jsonl[2]["loss"] is None  # NaN is written as null
    assert [row["multiplier/rate"] for row in from_csv] == [0.0, 0.2, 0.25]
    assert from_csv[0]["strict_violation/rate"] is None and from_csv[2]["note"] == "ok"
    assert isinstance(from_csv[0]["step"], int)
    (run / "metrics.jsonl").unlink()
    assert repr(read_metrics(run)) == repr(from_csv)  # the CSV when it is the only log (repr: NaN != NaN)
    assert np.isnan(from_csv[2]["loss"])  # the CSV keeps the NaN the JSON lines write as null


def test_read_metrics_csv_cells() -> None:
    assert metrics_log._csv_value("") is None
    assert metrics_log._csv_value("3") == 3 and isinstance(metrics_log._csv_value("3"), int)
    assert isinstance(metrics_log._csv_value("3.0"), float)
    assert metrics_log._csv_value("1e3") == 1000.0 and isinstance(metrics_log._csv_value("1e3"), float)
    assert metrics_log._csv_value("-0.25") == -0.25
    assert np.isnan(metrics_log._csv_value("nan"))
    assert metrics_log._csv_value("True") is True and metrics_log._csv_value("False") is False
    assert metrics_log._csv_value("train") == "train"


def test_read_metrics_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl or metrics.csv in"):
        read_metrics(tmp_path)
    with pytest.raises(FileNotFoundError, match="no metrics log at"):
        read_metrics(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"step": 0}\n\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: not a JSON object"):
        read_metrics(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        read_metrics(tmp_path / "list.jsonl")
    (tmp_path / "log.txt").write_text("step\n0\n")
    with pytest.raises(ValueError, match=r"read_metrics: expected a .jsonl or .csv file"):
        read_metrics(tmp_path / "log.txt")


def test_read_metrics_feeds_the_library_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from cooper_like.reporting import plot_multipliers, trajectory_keys

    run = write_log(tmp_path / "run")
    assert trajectory_keys(read_metrics(run), "violation/") == ["violation/rate"]
    with pytest.raises(TypeError, match=r"then pass `read_metrics\(path\)`"):
        plot_multipliers(run)  # type: ignore[arg-type]
    figure = plot_multipliers(read_metrics(run), path=tmp_path / "multipliers.png")
    assert (tmp_path / "multipliers.png").stat().st_size > 0
    plots.pyplot().close(figure)


# ---------------------------------------------------------------------------------------- plots


def test_plot_series_writes_sorted_prefix_matches_and_closes(tmp_path: Path) -> None:
    plt = plots.pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed")
    drawn: list[Any] = []
    original = plots.plot_columns

    def spy(*args: Any, **kwargs: Any) -> Any:
        figure = original(*args, **kwargs)
        drawn.append(figure)
        return figure

    history = [
        {"epoch": 0, "multiplier/b": 0.1, "multiplier/a": 0.0, "loss": 1.0},
        {"epoch": 1, "multiplier/b": 0.2, "multiplier/a": 0.3, "loss": 0.5},
    ]
    open_before = set(plt.get_fignums())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "plot_columns", spy)
        written = plots.plot_series(
            history,
            ["multiplier/"],
            tmp_path / "m.png",
            x="epoch",
            ylabel="multiplier",
            title="t",
            zero_line=True,
            levels=[0.25],
        )
    assert written and (tmp_path / "m.png").stat().st_size > 0
    assert set(plt.get_fignums()) == open_before  # closed after saving
    axis = drawn[0].axes[0]
    lines = [line for line in axis.get_lines() if not str(line.get_label()).startswith("_")]
    assert [line.get_label() for line in lines] == ["multiplier/a", "multiplier/b"]  # sorted
    assert np.asarray(lines[0].get_xdata()).tolist() == [0, 1]
    assert axis.get_title() == "t" and axis.get_xlabel() == "epoch" and axis.get_ylabel() == "multiplier"
    references = [line for line in axis.get_lines() if str(line.get_label()).startswith("_")]
    assert [float(np.asarray(line.get_ydata())[0]) for line in references] == [0.0, 0.25]


def test_plot_series_exact_names_and_nothing_to_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if plots.pyplot() is None:
        pytest.skip("matplotlib is not installed")
    history = [{"step": 0, "test_accuracy": 0.9, "train_accuracy": 0.95, "train_accuracy_top5": 1.0}]
    drawn: list[list[str]] = []
    original = plots.plot_columns

    def spy(*args: Any, **kwargs: Any) -> Any:
        drawn.append(kwargs["keys"])
        return original(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_columns", spy)
    # exact: the given names, in the given order, those in no row dropped; no prefix matching
    names = ["train_accuracy", "missing", "test_accuracy"]
    assert plots.plot_series(history, names, tmp_path / "a.png", ylabel="accuracy", title="", exact=True)
    assert drawn == [["train_accuracy", "test_accuracy"]] and (tmp_path / "a.png").is_file()
    # no matching column: nothing written, False
    assert not plots.plot_series(history, ["multiplier/"], tmp_path / "none.png", ylabel="", title="")
    assert not plots.plot_series(history, ["missing"], tmp_path / "none.png", ylabel="", title="", exact=True)
    assert not plots.plot_series([], ["multiplier/"], tmp_path / "none.png", ylabel="", title="")
    assert not (tmp_path / "none.png").exists()


def test_plot_series_without_matplotlib_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "pyplot", lambda: None)
    history = [{"step": 0, "multiplier/a": 0.1}]
    assert not plots.plot_series(history, ["multiplier/"], tmp_path / "m.png", ylabel="m", title="m")
    assert not (tmp_path / "m.png").exists()


def test_pyplot_is_on_the_agg_backend() -> None:
    plt = plots.pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed")
    assert plt.get_backend().lower() == "agg"


# -------------------------------------------------------------------------------------- seeding


def _draw() -> tuple[float, float, float, float]:
    return random.random(), random.gauss(0, 1), float(np.random.standard_normal()), float(torch.rand(1))


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    seed_everything(123)
    random.gauss(0, 1)  # leave a cached gaussian in Python's generator state
    np.random.standard_normal()  # and in NumPy's
    state = rng_state()
    save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    expected = [_draw() for _ in range(3)]
    seed_everything(999)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert [_draw() for _ in range(3)] == expected


def test_seed_everything_is_reproducible_and_validates() -> None:
    seed_everything(7)
    first = _draw()
    seed_everything(7)
    assert _draw() == first
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError, match=rf"seed must be an int in \[0, 2\*\*32\), got {bad!r}"):
            seed_everything(bad)  # type: ignore[arg-type]


def test_set_rng_state_rejects_bad_records() -> None:
    with pytest.raises(TypeError, match="state must be a dict from rng_state\\(\\), got list"):
        set_rng_state([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"missing the RNG state\(s\) \['numpy'\]"):
        set_rng_state({"python": {}, "torch": torch.get_rng_state()})
    state = rng_state()
    state["python"] = {"version": 3}
    with pytest.raises(ValueError, match="not a valid rng_state\\(\\) record"):
        set_rng_state(state)


# ------------------------------------------------------------------------------------- progress


class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_only_at_a_terminal_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [1, 2, 3]
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(progress.sys, "stderr", _Tty(False))
    assert progress.progress(items) is items
    monkeypatch.setattr(progress.sys, "stderr", _Tty(True))
    assert progress.progress_enabled()
    bar = progress.progress(items, desc="x", file=_Tty(True))
    assert bar is not items and list(bar) == items
    monkeypatch.setenv("CI", "true")
    assert progress.progress(items) is items
    assert progress.progress(items, enabled=False) is items
    monkeypatch.setattr(progress.sys, "stderr", None)
    monkeypatch.delenv("CI")
    assert not progress.progress_enabled()


def test_progress_without_tqdm_returns_iterable(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes "from tqdm import tqdm" raise ImportError
    items = (1, 2)
    assert progress.progress(items, enabled=True) is items


def test_umask_read_restores_umask() -> None:
    before = os.umask(0o022)
    os.umask(before)
    assert checkpoints._read_umask() == before
    assert os.umask(before) == before
