"""Settings, data and checkpoints that cannot work are refused before the run, with what to change."""

import re
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import MNIST, Digits
from modules import ClassifierModule
from modules.classifier import ConfigError
from modules.nets import MLP, SmallCNN
from modules.preflight import check_network_takes_the_data
from tests.runs import cli, run_in_tmp  # noqa: F401 (run_in_tmp: a fixture)

pytestmark = pytest.mark.usefixtures("run_in_tmp")

def test_whole_run_schedule_without_an_end_to_the_run_is_refused():
    onecycle = ("--model.scheduler", "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01")
    with pytest.raises(SystemExit) as done:
        cli("digits", "fit", "--trainer.max_epochs", "-1", *onecycle)
    assert done.value.code.startswith("error: model.scheduler plans its learning rates over the whole run's steps, "
                                      "and this run has no end (trainer.max_epochs -1 and no max_steps).")


def test_scheduler_budget_shorter_than_the_run_is_refused_before_it_starts():
    with pytest.raises(SystemExit, match=r"model.scheduler plans 5 steps and this run takes 6 \(max_epochs x steps an epoch\): it would fail part way"):
        cli("digits", "fit", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--model.scheduler",
            "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01", "--model.scheduler.total_steps", "5")


def test_plateau_scheduler_watching_accuracy_must_maximise():
    with pytest.raises(SystemExit, match=r"give --model.scheduler.mode max \(init_args.mode in a YAML file\)"):
        cli("digits", "fit", "--trainer.fast_dev_run", "true", "--model.scheduler_monitor", "val/acc")


def test_plateau_scheduler_steps_after_the_epochs_that_validate():
    # digits.yaml's ReduceLROnPlateau watches val/loss; validating every 2nd epoch, it steps every 2nd epoch.
    run = cli("digits", "fit", "--trainer.max_epochs", "4", "--trainer.limit_train_batches", "3",
              "--trainer.check_val_every_n_epoch", "2")
    assert run.trainer.current_epoch == 4 and run.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2


def test_plateau_scheduler_without_validation_is_an_error_not_inert():
    model = ClassifierModule(
        net=partial(MLP, in_features=64),
        class_names=[str(d) for d in range(10)],
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min"),
    )
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match=r"validation is off .* ReduceLROnPlateau \(val/loss\) watch validation metrics"):
        trainer.fit(model, datamodule=Digits())


def test_validation_off_names_what_watches_its_metrics_before_training():
    with pytest.raises(SystemExit, match=r"validation is off \(trainer.limit_val_batches=0\), but EarlyStopping \(val/acc\), "
                       r"ModelCheckpoint \(val/acc\), ReduceLROnPlateau \(val/loss\) watch"):
        cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0")
    assert not list(Path("lightning_logs").rglob("*.ckpt"))


def test_network_that_cannot_take_the_data_is_refused_before_the_run():
    with pytest.raises(SystemExit) as done:
        cli("digits", "validate", "--model.net.in_features", "784")  # the MNIST size, on 8x8 digits
    assert re.fullmatch(r"error: the network \(MLP\) cannot take this data's images, of shape \(1, 8, 8\) \(channels, "
                        r"height, width\): .*784.*\. Set model.net's sizes \(in_features, in_channels, image_size\) to "
                        r"the data's\.", done.value.code)


def test_batches_of_one_image_are_refused_only_where_a_batch_norm_sees_one_value_per_channel():
    def model(net, shape):
        return ClassifierModule(net=net, class_names=list("ab"), input_shape=shape)

    check_network_takes_the_data(model(partial(SmallCNN, channels=(4, 8)), (1, 28, 28)), one_image_batches=True)  # over pixels
    check_network_takes_the_data(model(partial(MLP, in_features=64, hidden=[8]), (1, 8, 8)), one_image_batches=True)  # none
    with pytest.raises(ConfigError, match="batch_size=1: the network's BatchNorm1d"):
        check_network_takes_the_data(model(partial(MLP, in_features=64, hidden=[8], batch_norm=True), (1, 8, 8)), one_image_batches=True)


def test_missing_data_stops_before_training_with_the_files_named(tmp_path):
    with pytest.raises(SystemExit) as error:
        cli("mnist", "fit", data_dir=tmp_path / "nowhere")
    message = str(error.value.code)
    assert message.startswith("error: mnist: data not found in") and "MNIST/raw/t10k-images-idx3-ubyte" in message


def test_data_dir_one_level_off_names_the_folder_that_holds_the_files_and_downloads_nothing(mnist_dir, monkeypatch):
    downloads = []
    monkeypatch.setattr(MNIST, "download_files", lambda self: downloads.append(self.data_dir))
    for wrong in (mnist_dir / "MNIST", mnist_dir / "MNIST" / "raw", mnist_dir.parent):  # its own folder, or above
        with pytest.raises(SystemExit) as error:
            cli("mnist", "fit", "--data.download", "true", data_dir=wrong)
        assert error.value.code == (f"error: mnist: data not found in {wrong}, but {mnist_dir} holds every file it "
                                    f"needs: use --data.data_dir {mnist_dir}")
    assert downloads == []  # not a second copy inside the wrong folder


def test_checkpoint_of_another_task_names_both_class_lists(cifar_pickle_dir, mnist_dir):
    cli("cifar10", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", data_dir=cifar_pickle_dir)
    ckpt = "lightning_logs/cifar10/version_0/checkpoints/last.ckpt"
    with pytest.raises(SystemExit, match=r"was trained on classes \['airplane', .*'truck'\], but the data has classes \['0', .*'9'\]"):
        cli("mnist", "test", "--ckpt_path", ckpt, data_dir=mnist_dir)


@pytest.mark.slow
def test_checkpoint_of_other_image_shape_is_refused_where_its_network_cannot_take_it(mnist_dir):
    # digits and MNIST share class names ('0'-'9'); the digits MLP takes 8x8 images only.
    cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1")
    ckpt = "lightning_logs/digits/version_0/checkpoints/last.ckpt"
    with pytest.raises(SystemExit, match=r"was trained on images of shape \(1, 8, 8\) .* cannot take this data's \(1, 28, 28\)"):
        cli("mnist", "test", "--ckpt_path", ckpt, data_dir=mnist_dir)


def test_a_checkpoint_path_that_is_a_folder_or_not_there_says_what_to_give(tmp_path):
    run = tmp_path / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"--ckpt_path \S+/version_0 is a folder: give a checkpoint file in it \(checkpoints/last\.ckpt\)\.$"):
        cli("digits", "test", "--ckpt_path", str(run))
    with pytest.raises(SystemExit, match=r"--ckpt_path nothere\.ckpt does not exist \(looked in \S+\)\. Give the path of a \.ckpt file, or last or best"):
        cli("digits", "test", "--ckpt_path", "nothere.ckpt")


def test_ckpt_alias_without_a_run_says_what_to_do():
    with pytest.raises(SystemExit, match="no run under lightning_logs/digits/version_.*Train first with `fit`"):
        cli("digits", "test", "--ckpt_path", "best")


@pytest.mark.slow
def test_evaluating_on_another_draw_of_the_validation_split_is_refused():
    cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3")
    for other in (["--data.val_split", "0.2"], ["--data.seed", "7"]):
        with pytest.raises(SystemExit, match=r"its validation split would hold images the checkpoint trained on. Use "
                           r"--data.val_split 0.1 --data.seed 42"):
            cli("digits", "validate", "--ckpt_path", "last", *other)
    tested = cli("digits", "test", "--ckpt_path", "last", "--data.val_split", "0.2")  # digits' own test split: unaffected
    assert "test/acc" in tested.trainer.callback_metrics
