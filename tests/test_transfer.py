"""Cats vs dogs transfer learning: torchvision weights from $TORCH_HOME, BackboneFinetuning, from scratch."""

import os
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DOWNLOADER = torchvision.models._api.load_state_dict_from_url
TINY = ["--data.image_size", "32", "--data.augment", "[]", "--data.batch_size", "4", "--trainer.accelerator", "cpu"]
TINY += ["--trainer.log_every_n_steps", "1", "--data.cache_dir", "cache"]


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
    """A resnet18 weights file under torchvision's own file name in $TORCH_HOME, where torch.hub looks first."""
    state = torchvision.models.resnet18(weights=None).state_dict()
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet18-f37072fd.pth")

    def cached_only(url, *args, **kwargs):  # torch.hub's own loader, allowed only when it needs no download
        if not (cache / Path(url).name).is_file():
            raise urllib.error.URLError("no network in tests")
        return DOWNLOADER(url, *args, **kwargs)

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", cached_only)
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

    (Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "resnet18-f37072fd.pth").unlink()
    ckpt = "lightning_logs/catdog/version_1/checkpoints/last.ckpt"
    predicted = main(["predict", "--config", str(CONFIGS / "catdog.yaml"), "--data.data_dir", str(catdog_filtered_dir), *TINY,
                      "--ckpt_path", ckpt, "--data.predict_dir", str(catdog_filtered_dir / "validation")])
    assert torch.equal(predicted.model.net.net.conv1.weight, after.model.net.net.conv1.weight)  # no weights file needed


def test_a_run_resumed_after_the_unfreeze_epoch_trains_its_backbone(catdog_filtered_dir):
    unfreeze = ("--model.net.init_args.weights", "null", "--trainer.callbacks.unfreeze_backbone_at_epoch=1")
    stopped = fit(catdog_filtered_dir, *unfreeze, "--trainer.max_epochs", "2")  # unfrozen in its second epoch
    resumed = fit(catdog_filtered_dir, *unfreeze, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    assert resumed.trainer.current_epoch == 3 and len(resumed.trainer.optimizers[0].param_groups) == 2
    assert all(p.requires_grad for p in resumed.model.net.backbone.parameters())
    before, after = stopped.model.net.net.conv1.weight, resumed.model.net.net.conv1.weight
    assert not torch.equal(before, after)  # the third epoch trained the backbone


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


def test_backbone_finetuning_with_a_network_without_a_backbone_says_what_to_change(catdog_filtered_dir):
    with pytest.raises(SystemExit, match=r"MLP has no pretrained backbone to freeze, and the config's BackboneFinetuning"):
        fit(catdog_filtered_dir, "--model.net", "modules.nets.MLP", "--model.net.in_features", str(3 * 32 * 32),
            "--trainer.fast_dev_run", "true")
