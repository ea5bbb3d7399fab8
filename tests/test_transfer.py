"""Transfer learning with timm and torchvision backbones: which library a name picks, BackboneFinetuning's frozen and
unfrozen phases and a resume across them, features remembered while frozen, and the preprocessing that follows the
weights. Weight files and the messages for bad ones: test_transfer_weights.py."""

import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import timm
import timm.data
import torch
import torchvision
from PIL import Image

from cli import main
from modules.nets import TransferNet
from tests.offline import no_network, offline  # noqa: F401 (offline: an autouse fixture)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DOWNLOADER = torchvision.models._api.load_state_dict_from_url
TINY = ["--data.image_size", "32", "--data.augment", "[]", "--data.batch_size", "4", "--trainer.accelerator", "cpu"]
TINY += ["--trainer.log_every_n_steps", "1", "--data.cache_dir", "cache"]
TIMM_TINY = ("--model.net.init_args.arch", "test_efficientnet")  # timm's smallest network: 99k parameters


@pytest.fixture
def planted_weights(tmp_path, monkeypatch) -> dict:
    """A resnet18 weights file under torchvision's own file name in $TORCH_HOME, where torch.hub looks first."""
    state = torchvision.models.resnet18(weights=None).state_dict()
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet18-f37072fd.pth")

    def cached_only(url, *args, **kwargs):  # torch.hub's own loader, allowed only when it needs no download
        return DOWNLOADER(url, *args, **kwargs) if (cache / Path(url).name).is_file() else no_network()

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", cached_only)
    return state


def fit(data_dir, *extra, config="catdog"):
    return main(["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--data.data_dir", str(data_dir), *TINY, *extra])


@pytest.mark.parametrize(("arch", "library", "built"), [
    ("resnet18", "auto", torchvision.models.ResNet),  # torchvision keeps its names: the course config is unchanged
    ("resnet18", "timm", timm.models.ResNet),  # the switch picks the other library's network of that name
    ("test_efficientnet", "auto", timm.models.EfficientNet),  # a name only timm has
])
def test_a_name_picks_its_library_and_the_head_fits_the_classes(arch, library, built):
    net = TransferNet(3, arch, weights=None, library=library)
    assert isinstance(net.backbone, built) and net.head.out_features == 3
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    head = {id(p) for p in net.head.parameters()}
    assert not head & {id(p) for p in net.backbone.parameters()}  # BackboneFinetuning freezes all but the head


def test_backbone_is_frozen_until_the_unfreeze_epoch(catdog_filtered_dir, planted_weights):
    before = fit(catdog_filtered_dir, "--trainer.max_epochs", "5")  # the config unfreezes at epoch 5
    net = before.model.net
    assert torch.equal(net.backbone.conv1.weight, planted_weights["conv1.weight"])  # loaded, and untouched while frozen
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    assert len(before.trainer.optimizers[0].param_groups) == 1

    after = fit(catdog_filtered_dir, "--trainer.max_epochs", "6")
    assert all(p.requires_grad for p in after.model.net.backbone.parameters())
    assert len(after.trainer.optimizers[0].param_groups) == 2  # BackboneFinetuning added the backbone's group
    assert not torch.equal(after.model.net.backbone.conv1.weight, planted_weights["conv1.weight"])

    (Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "resnet18-f37072fd.pth").unlink()
    ckpt = "lightning_logs/catdog/version_1/checkpoints/last.ckpt"
    predicted = main(["predict", "--config", str(CONFIGS / "catdog.yaml"), "--data.data_dir", str(catdog_filtered_dir), *TINY,
                      "--ckpt_path", ckpt, "--data.predict_dir", str(catdog_filtered_dir / "validation")])
    assert torch.equal(predicted.model.net.backbone.conv1.weight, after.model.net.backbone.conv1.weight)  # no weights file needed


@pytest.mark.parametrize("arch", [(), pytest.param(TIMM_TINY, marks=pytest.mark.slow)], ids=["torchvision", "timm"])
def test_a_run_resumed_after_the_unfreeze_epoch_trains_its_backbone(catdog_filtered_dir, arch):
    unfreeze = (*arch, "--model.net.init_args.weights", "null", "--trainer.callbacks.unfreeze_backbone_at_epoch=1",
                "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1")
    stopped = fit(catdog_filtered_dir, *unfreeze, "--trainer.max_epochs", "2")  # unfrozen in its second epoch
    resumed = fit(catdog_filtered_dir, *unfreeze, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    assert resumed.trainer.current_epoch == 3 and len(resumed.trainer.optimizers[0].param_groups) == 2
    assert all(p.requires_grad for p in resumed.model.net.backbone.parameters())
    before, after = stopped.model.net.backbone.state_dict(), resumed.model.net.backbone.state_dict()
    assert any(not torch.equal(before[key], after[key]) for key in before)  # the third epoch trained the backbone


def test_missing_weights_say_which_file_to_place_where(catdog_filtered_dir, tmp_path):
    with pytest.raises(SystemExit) as error:
        fit(catdog_filtered_dir, "--trainer.fast_dev_run", "true")
    message = str(error.value.code)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "--model.net.init_args.weights null" in message and "--model.net.init_args.weights PATH" in message


def test_from_scratch_needs_no_weights(catdog_kaggle_dir):
    run = fit(catdog_kaggle_dir, "--model.net.init_args.weights", "null", "--data.val_split", "4", "--trainer.max_epochs", "1")
    assert run.datamodule.class_names == ["cat", "dog"] and len(run.datamodule.val_set) == 4
    assert run.trainer.state.finished


def test_backbone_finetuning_with_a_network_without_a_backbone_says_what_to_change(catdog_filtered_dir):
    with pytest.raises(SystemExit, match=r"MLP has no pretrained backbone to freeze, and the config's BackboneFinetuning"):
        fit(catdog_filtered_dir, "--model.net", "modules.nets.MLP", "--model.net.in_features", str(3 * 32 * 32),
            "--trainer.fast_dev_run", "true")


class BackboneImages(L.Callback):
    """Counts the images the backbone computes, during fit and during test."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.counts = getattr(self, "counts", {})
        self.counts.setdefault(stage, 0)
        if not hasattr(self, "hook"):
            self.hook = pl_module.net.backbone.register_forward_hook(lambda m, args, out: self.add(trainer, args[0].shape[0]))

    def add(self, trainer: L.Trainer, n: int) -> None:
        self.counts["test" if trainer.testing else "fit"] += n


def test_a_frozen_backbone_in_eval_mode_computes_each_image_once(tmp_path):
    """The strong recipes' head-only phase: features remembered, so later epochs and the test cost no backbone pass."""
    rng = np.random.default_rng(0)
    for i in range(16):  # photos that differ (the fixtures' flat images would decode alike and be remembered as one)
        folder = tmp_path / "data" / ("train" if i < 12 else "validation") / ("cats", "dogs")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    run = fit(tmp_path / "data", *TIMM_TINY, "--model.net.init_args.weights", "null", "--trainer.max_epochs", "3",
              "--test_after_fit", "true", "--trainer.callbacks+=tests.test_transfer.BackboneImages", config="catdog_strong")
    counter = next(c for c in run.trainer.callbacks if isinstance(c, BackboneImages))
    assert 16 <= counter.counts["fit"] <= 16 + 6  # + the summary's and the graph's inputs; 3 epochs: over 50
    assert counter.counts["test"] == 0  # the best checkpoint holds the same backbone: its features are still good
    assert not any(m.training for m in run.model.net.backbone.modules())
    assert run.trainer.callback_metrics["test/acc"] == run.trainer.checkpoint_callback.best_model_score

    net = TransferNet(2, "test_efficientnet", weights=None, cache_features=True)
    net(torch.rand(2, 3, 32, 32))
    assert not net.memo  # a backbone that trains is never remembered


def test_the_data_prepares_images_as_the_pretrained_config_says(catdog_filtered_dir, capsys):
    run = fit(catdog_filtered_dir, *TIMM_TINY, "--model.net.init_args.weights", "null", "--data.image_size", "null",
              "--trainer.fast_dev_run", "true", config="catdog_strong")
    data, cfg = run.datamodule, timm.models.get_pretrained_cfg("test_efficientnet")  # 160, crop 0.95, bicubic
    expected = {"image_size": 160, "crop_pct": 0.95, "interpolation": "bicubic", "mean": list(cfg.mean), "std": list(cfg.std)}
    assert data.preprocessing == expected and set(data.preprocessing_sources.values()) == {
        "timm's pretrained_cfg of test_efficientnet.r160_in1k"}
    assert "Preprocessing: image_size 160, crop_pct 0.95, interpolation bicubic" in capsys.readouterr().out
    # The first validation file, as the data hands it to the network and as timm's own evaluation transform makes it.
    first = sorted((catdog_filtered_dir / "validation").rglob("*.jpg"))[0]
    ours = data.transforms(data.val_set.all_images[:1].float() / 255)[0]
    theirs = timm.data.create_transform(**timm.data.resolve_data_config({}, model=run.model.net.backbone))
    assert torch.allclose(ours, theirs(Image.open(first).convert("RGB")), atol=1e-5)

    given = fit(catdog_filtered_dir, *TIMM_TINY, "--model.net.init_args.weights", "null", "--data.mean", "[0.1,0.2,0.3]",
                "--trainer.fast_dev_run", "true", config="catdog_strong")
    assert given.datamodule.preprocessing["mean"] == [0.1, 0.2, 0.3] and given.datamodule.preprocessing_sources["mean"] == "config"
    assert given.datamodule.preprocessing["image_size"] == 32 and given.datamodule.preprocessing["crop_pct"] == 0.95
    assert given.model.hparams.input_shape == (3, 32, 32)


def test_torchvision_weights_bring_their_transforms_preset():
    preset = torchvision.models.get_model_weights("efficientnet_b0").IMAGENET1K_V1.transforms()
    facts = TransferNet.preprocessing("efficientnet_b0", "IMAGENET1K_V1")
    assert (facts["image_size"], facts["crop_pct"] * preset.resize_size[0], facts["interpolation"]) == (224, 224, "bicubic")
    assert facts["mean"] == list(preset.mean) and facts["source"] == "torchvision's EfficientNet_B0_Weights.IMAGENET1K_V1.transforms()"
    assert TransferNet.preprocessing("resnet18", "/any/file.pth")["crop_pct"] == 0.875  # a file: the default weights'
