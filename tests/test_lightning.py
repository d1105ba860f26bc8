"""The PyTorch Lightning recipe of docs/lightning.md: train, checkpoint (multipliers included), resume.

The LightningModule under test is the one printed on the page (its first Python block), so the recipe
users copy is the recipe that is tested. Skipped when ``lightning`` is not installed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

lightning = pytest.importorskip("lightning")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "lightning.md"
BATCHES_PER_EPOCH = 6


def recipe() -> dict[str, Any]:
    """Execute the page's first Python block (the problem and the LightningModule)."""
    block = re.search(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    assert block is not None, f"no Python block in {PAGE}"
    namespace: dict[str, Any] = {"__name__": "lightning_recipe"}
    exec(compile(block.group(1), str(PAGE), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def classes() -> dict[str, Any]:
    return recipe()


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(32 * BATCHES_PER_EPOCH, 5, generator=generator)
    labels = (features[:, 0] > -0.5).float()
    return DataLoader(TensorDataset(features, labels), batch_size=32)  # no shuffling: a fixed order


def trainer(max_epochs: int, root: Path) -> Any:
    return lightning.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )


def module(classes: dict[str, Any], seed: int) -> Any:
    torch.manual_seed(seed)
    return classes["ConstrainedClassifier"]()


def multiplier_of(model: Any) -> torch.Tensor:
    return model.problem.rate.multiplier.weight.detach().clone()


def test_checkpoint_holds_multipliers_and_both_optimizer_states(
    classes: dict[str, Any], tmp_path: Path
) -> None:
    model = module(classes, seed=1)
    fit = trainer(1, tmp_path)
    fit.fit(model, loader())
    assert fit.global_step == BATCHES_PER_EPOCH  # the primal wrapper counts one step per roll()
    multiplier = multiplier_of(model)
    assert float(multiplier) > 0  # the bound binds: the multiplier moved

    fit.save_checkpoint(tmp_path / "run.ckpt")
    saved = torch.load(tmp_path / "run.ckpt", weights_only=True)
    assert torch.equal(saved["cooper_problem"]["multipliers"]["rate"]["weight"], multiplier)
    primal_state, dual_state = saved["optimizer_states"]
    assert set(primal_state["state"][0]) >= {"exp_avg", "exp_avg_sq"}  # Adam on the model
    assert "xi" in dual_state["state"][0]  # nuPI's error average on the multiplier


def test_resume_is_exact(classes: dict[str, Any], tmp_path: Path) -> None:
    straight = module(classes, seed=1)
    trainer(2, tmp_path / "straight").fit(straight, loader())

    first = module(classes, seed=1)
    fit = trainer(1, tmp_path / "first")
    fit.fit(first, loader())
    fit.save_checkpoint(tmp_path / "epoch1.ckpt")

    resumed = module(classes, seed=99)  # a different initialisation: everything must come from the checkpoint
    resumed_fit = trainer(2, tmp_path / "resumed")
    resumed_fit.fit(resumed, loader(), ckpt_path=tmp_path / "epoch1.ckpt")

    assert resumed_fit.global_step == 2 * BATCHES_PER_EPOCH
    assert torch.equal(multiplier_of(resumed), multiplier_of(straight))
    for name, parameter in straight.model.named_parameters():
        assert torch.equal(dict(resumed.model.named_parameters())[name], parameter), name
    straight_xi = straight.constrained_optimizer.dual_optimizers[0].state_dict()["state"][0]["xi"]
    resumed_xi = resumed.constrained_optimizer.dual_optimizers[0].state_dict()["state"][0]["xi"]
    assert torch.equal(straight_xi, resumed_xi)


def test_loading_the_module_restores_the_multipliers(classes: dict[str, Any], tmp_path: Path) -> None:
    model = module(classes, seed=1)
    fit = trainer(1, tmp_path)
    fit.fit(model, loader())
    fit.save_checkpoint(tmp_path / "run.ckpt")
    loaded = classes["ConstrainedClassifier"].load_from_checkpoint(tmp_path / "run.ckpt", weights_only=True)
    assert torch.equal(multiplier_of(loaded), multiplier_of(model))
    assert loaded.hparams["bound"] == 0.3
