"""Trainer scaffolding shared by every problem: one concept per module.

- ``config``: pydantic training configs and their argparse front end.
- ``metrics_log``: CSV / JSON-lines / TensorBoard scalar logging.
- ``checkpoints``: atomic writes and weights-only checkpoint loading.
- ``seeding``: seeding and capture/restore of the global RNG states.
- ``progress``: tqdm bars only for a person at a terminal (``progress.progress``; not re-exported
  here, so that ``problems.scaffold.progress`` stays the module).
- ``datasets``: bundled data sets and their deterministic stratified splits.
"""

from problems.scaffold.checkpoints import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from problems.scaffold.config import ConfigError, TrainConfig, build_parser, config_from_argv, parse_config
from problems.scaffold.datasets import (
    DatasetError,
    DataSplit,
    load_digits_split,
    load_mnist5k,
    mnist5k_split,
    stratified_split,
)
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.seeding import rng_state, seed_everything, set_rng_state

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataSplit",
    "DatasetError",
    "MetricsLogger",
    "TrainConfig",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_parser",
    "config_from_argv",
    "load_checkpoint",
    "load_digits_split",
    "load_mnist5k",
    "mnist5k_split",
    "parse_config",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "stratified_split",
]
