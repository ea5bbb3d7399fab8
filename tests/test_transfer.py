"""Cats vs dogs transfer learning: torchvision weights from $TORCH_HOME, BackboneFinetuning, from scratch."""

import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["--data.image_size", "32", "--data.augment", "[]", "--data.batch_size", "4", "--trainer.accelerator", "cpu"]
TINY += ["--trainer.log_every_n_steps", "1"]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)


@pytest.fixture
def planted_weights(tmp_path, monkeypatch) -> dict:
    """A resnet18 weights file under torchvision's own file name, where torch.hub looks first."""
    state = torchvision.models.resnet18(weights=None).state_dict()
    target = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    monkeypatch.setattr(
        torchvision.models._api, "load_state_dict_from_url", lambda url, *a, **k: torch.load(target, weights_only=True)
    )
    return state


def fit(data_dir, *extra):
    return main(["fit", "--config", str(CONFIGS / "catdog.yaml"), "--data.data_dir", str(data_dir), *TINY, *extra])


def test_backbone_is_frozen_until_the_unfreeze_epoch(catdog_filtered_dir, planted_weights):
    before = fit(catdog_filtered_dir, "--trainer.max_epochs", "5")  # the config unfreezes at epoch 5
    net = before.model.net
    assert torch.equal(net.net.conv1.weight, planted_weights["conv1.weight"])  # loaded, and untouched while frozen
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    assert len(before.trainer.optimizers[0].param_groups) == 1

    after = fit(catdog_filtered_dir, "--trainer.max_epochs", "6")
    assert all(p.requires_grad for p in after.model.net.backbone.parameters())
    assert len(after.trainer.optimizers[0].param_groups) == 2  # BackboneFinetuning added the backbone's group
    assert not torch.equal(after.model.net.net.conv1.weight, planted_weights["conv1.weight"])


def test_missing_weights_say_which_file_to_place_where(catdog_filtered_dir, tmp_path):
    with pytest.raises(SystemExit) as error:
        fit(catdog_filtered_dir, "--trainer.fast_dev_run", "true")
    message = str(error.value.code)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "--model.net.init_args.weights null" in message


def test_from_scratch_needs_no_weights(catdog_kaggle_dir):
    run = fit(catdog_kaggle_dir, "--model.net.init_args.weights", "null", "--data.val_split", "4", "--trainer.max_epochs", "1")
    assert run.datamodule.class_names == ["cat", "dog"] and len(run.datamodule.val_set) == 4
    assert run.trainer.state.finished
