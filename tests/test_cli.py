"""Every task end to end through ``cli.py``, on tiny data in each dataset's real format."""

import csv
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

from functools import partial

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import cli as cli_module
from cli import check_network_takes_the_data, keep_freed_memory, main, skip_absent_nvml
from datamodules import MNIST, Digits
from datamodules.base import report_skipped
from datamodules.errors import DataWarning
from modules import ClassifierModule
from modules.callbacks import ProgressBar
from modules.classifier import ConfigError
from modules.nets import MLP, SmallCNN
from modules.pictures import logged_epochs
from tests.conftest import N_TEST

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOP_LEVEL_OPTIMIZER = (
    "{}: LightningCLI's top-level optimizer options are not used here; the model builds its optimizer and schedule. "
    "Use --model.optimizer torch.optim.SGD --model.optimizer.lr 0.1, and --model.scheduler CLASS (or null); "
    "--print_config shows the config's."
)
TASK_DATA = {"digits": None, "mnist": "mnist_dir", "cifar10": "cifar_pickle_dir", "svhn": "svhn_dir"}


@pytest.fixture(autouse=True)
def run_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # lightning_logs/ and any stray output land in the test's folder
    monkeypatch.setattr(sys, "argv", ["cli.py"])  # the CLI reads its arguments from main(args) alone


def cli(task: str, subcommand: str, *extra: str, data_dir=None, logs="lightning_logs"):
    args = [subcommand, "--config", str(CONFIGS / f"{task}.yaml"), "--trainer.accelerator", "cpu"]
    args += ["--trainer.logger.init_args.save_dir", str(logs), "--trainer.log_every_n_steps", "1", "--data.batch_size", "8"]
    if data_dir is not None:
        args += ["--data.data_dir", str(data_dir), "--data.download", "false"]
    return main(args + list(extra))


def data_for(task: str, request):
    return request.getfixturevalue(TASK_DATA[task]) if TASK_DATA[task] else None


@pytest.mark.parametrize("task", TASK_DATA)
def test_fast_dev_run(task, request, caplog):
    run = cli(task, "fit", "--trainer.fast_dev_run", "true", data_dir=data_for(task, request))
    assert run.trainer.state.finished and run.trainer.global_step == 1
    assert "GPU available" in caplog.text and "💡 Tip" not in caplog.text  # Lightning's messages, without its advert


@pytest.mark.parametrize("task", TASK_DATA)
def test_fit_validate_test_predict(task, request, capsys):
    data_dir = data_for(task, request)
    fit = cli(task, "fit", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", data_dir=data_dir)
    run = Path("lightning_logs") / task / "version_0"
    # What to run next, with the run's own config (overrides included): the test of the best checkpoint, and how to
    # train longer: on from last.ckpt, or a new run where the schedule spans the whole run (MNIST's OneCycleLR).
    out = capsys.readouterr().out
    assert re.search(r"\nTotal mult-adds \([MGT]\): [\d.]+\n", out)  # the network's summary, in torchinfo's units
    train_on = f"Train on:  python cli.py fit --config {run}/config.yaml --ckpt_path {run}/checkpoints/last.ckpt --trainer.max_epochs N"
    if task == "mnist":
        train_on = f"Train longer: python cli.py fit --config {run}/config.yaml --trainer.max_epochs N (N above 2; a new run, as OneCycleLR"
    assert train_on in out
    test_it = re.search(r"Test it:   python cli.py (.*)", out).group(1)
    assert test_it == f"test --config {run}/config.yaml --ckpt_path {fit.trainer.checkpoint_callback.best_model_path}"
    assert (run / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 6)
    assert last["hyper_parameters"]["class_names"] == fit.datamodule.class_names  # predict needs no data
    assert len(list((run / "checkpoints").glob("best-epoch=*-val_acc=*.ckpt"))) == 1
    events = EventAccumulator(str(run))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= scalars  # what TensorBoard shows
    assert any(tag.startswith("lr-") for tag in scalars)  # the learning rate
    assert [e.step for e in events.Scalars("val/acc")] == [2, 5]  # one point per epoch
    assert [e.step for e in events.Scalars("train/acc")] == [2, 5]

    validated = cli(task, "validate", "--ckpt_path", "best", data_dir=data_dir)
    assert 0 <= validated.trainer.callback_metrics["val/acc"] <= 1
    watch = "(watch: tensorboard --logdir lightning_logs)"
    assert f"Validation metrics and pictures: {run.with_name('version_1')} (confusion_matrix_val.png)  {watch}" in capsys.readouterr().out

    tested = main(shlex.split(test_it))  # as printed, copied to a terminal
    assert {"test/loss", "test/acc"} <= set(tested.trainer.callback_metrics)
    assert tested.trainer.log_dir == str(run.with_name("version_2"))  # a run of its own, after validate's
    pictures = "(confusion_matrix_test.png, misclassified_test.png)"
    assert capsys.readouterr().out.endswith(f"Test metrics and pictures: {run.with_name('version_2')} {pictures}  {watch}\n")

    predicted = cli(task, "predict", "--ckpt_path", "last", data_dir=data_dir)
    csv_path = Path(predicted.trainer.log_dir) / "predictions.csv"
    assert f"Wrote {len(predicted.datamodule.test_set)} predictions to {csv_path}" in capsys.readouterr().out
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(predicted.datamodule.test_set) == (N_TEST if data_dir else 359)
    assert {row["predicted"] for row in rows} <= set(fit.datamodule.class_names)
    assert all(row["true"] in fit.datamodule.class_names and 0 < float(row["probability"]) <= 1 for row in rows)


def test_test_after_fit_tests_the_best_checkpoint_in_the_same_run(capsys):
    common = ("--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")
    run = cli("digits", "fit", *common, "--test_after_fit", "true")
    out = capsys.readouterr().out
    assert "Test it:   testing it now (--test_after_fit)" in out
    folder = "lightning_logs/digits/version_0"
    assert out.endswith(f"Test metrics and pictures: {folder} (confusion_matrix_test.png, misclassified_test.png)  "
                        "(watch: tensorboard --logdir lightning_logs)\n")
    assert (f"Train on:  python cli.py fit --config {folder}/config.yaml --ckpt_path {folder}/checkpoints/last.ckpt "
            "--trainer.max_epochs N (N above 2)") in out
    assert run.trainer.ckpt_path == run.trainer.checkpoint_callback.best_model_path != ""
    assert "test/acc" in run.trainer.callback_metrics and run.model.latest_confusion["test"].sum() == 359
    events = EventAccumulator("lightning_logs/digits/version_0")
    events.Reload()
    assert "test/acc" in events.Tags()["scalars"] and not Path("lightning_logs/digits/version_1").exists()
    assert {"confusion_matrix/test", "misclassified/test"} <= set(events.Tags()["images"])  # after fit closed the writer
    hparams = events.PluginTagToContent("hparams")["_hparams_/experiment"]  # the run's one HPARAMS entry: fit and test
    columns = {m.name.tag for m in plugin_data_pb2.HParamsPluginData.FromString(hparams).experiment.metric_infos}
    assert {"best/val_acc", "final/val/acc", "test/acc"} <= columns


def test_progress_bar_follows_the_config_and_the_trainer_switch():
    """The configs set the bar's refresh rate; ``--trainer.enable_progress_bar false`` still turns it off."""
    shown = cli("digits", "fit", "--trainer.fast_dev_run", "true")
    assert isinstance(shown.trainer.progress_bar_callback, ProgressBar)
    assert shown.trainer.progress_bar_callback.refresh_rate == 10
    hidden = cli("digits", "fit", "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false")
    assert hidden.trainer.progress_bar_callback is None and hidden.trainer.state.finished


def test_progress_bar_shows_figures_in_the_thousands_as_whole_numbers(monkeypatch):
    """tqdm writes a float with three significant digits: 3840.4321 images a second would read 3.84e+3."""
    figures = {"train/images_per_s": 3840.4321, "val/acc": 0.979, "train/loss_step": float("nan"), "big": float("inf"), "v_num": 0,
               "almost": 999.8123}
    monkeypatch.setattr(TQDMProgressBar, "get_metrics", lambda self, trainer, module: dict(figures))
    shown = ProgressBar().get_metrics(None, None)
    assert shown["train/images_per_s"] == 3840 and Tqdm.format_num(shown["train/images_per_s"]) == "3840"
    assert Tqdm.format_num(figures["train/images_per_s"]) == "3.84e+3"  # what Lightning's bar would show
    assert shown["val/acc"] == 0.979 and shown["big"] == float("inf") and shown["train/loss_step"] != shown["train/loss_step"]
    assert Tqdm.format_num(figures["almost"]) == "1e+3" and Tqdm.format_num(shown["almost"]) == "1000"


def test_switching_off_checkpoints_or_the_logger_drops_the_configured_callbacks_that_need_them(capsys):
    """Lightning refuses ModelCheckpoint without checkpointing and LearningRateMonitor without a logger."""
    common = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--test_after_fit", "true")
    unsaved = cli("digits", "fit", *common, "--trainer.enable_checkpointing", "false")
    assert unsaved.trainer.checkpoint_callbacks == [] and "test/acc" in unsaved.trainer.callback_metrics
    assert not list(Path("lightning_logs").rglob("*.ckpt"))
    assert "no best checkpoint (checkpointing or validation is off); testing the final weights" in capsys.readouterr().out
    unlogged = cli("digits", "fit", *common, "--trainer.logger", "false")
    assert unlogged.trainer.logger is None and "test/acc" in unlogged.trainer.callback_metrics
    # In the config's trainer.default_root_dir, under lightning_logs: not in the folder the command runs in.
    assert list(Path("lightning_logs/digits/checkpoints").glob("best-*.ckpt")) and (Path("lightning_logs/digits/inputs.png")).is_file()
    assert [p.name for p in Path(".").iterdir()] == ["lightning_logs"]


def test_running_loss_logging_can_be_switched_off():
    run = cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.log_every_n_steps", "0")
    assert "train/loss_step" not in run.trainer.callback_metrics and "train/loss" in run.trainer.callback_metrics


def test_epoch_metrics_are_whole_set_figures(mnist_dir):
    """test/loss and test/acc are means over every image however the batches fall (20 images in 8 + 8 + 4)."""
    cli("mnist", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", data_dir=mnist_dir)
    tested = cli("mnist", "test", "--ckpt_path", "last", data_dir=mnist_dir)
    model, data = tested.model.eval(), tested.datamodule
    with torch.no_grad():
        batches = [data.on_after_batch_transfer(batch, 0) for batch in data.test_dataloader()]
        logits, labels = torch.cat([model(images) for images, _ in batches]), torch.cat([labels for _, labels in batches])
    assert [len(labels) for _, labels in batches] == [8, 8, 4]
    metrics = tested.trainer.callback_metrics
    assert metrics["test/acc"].item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert metrics["test/loss"].item() == pytest.approx(model.loss(logits, labels).item(), rel=1e-5)  # the configured loss


def test_resume_from_last_continues_where_it_stopped(capsys):
    common = ("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1")
    cli("digits", "fit", "--trainer.max_epochs", "2", *common, logs="straight")
    cli("digits", "fit", "--trainer.max_epochs", "1", *common, logs="stopped")
    with pytest.raises(SystemExit) as refused:  # LightningCLI would continue the checkpoint's settings, silently
        cli("digits", "fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", "--model.optimizer.lr", "0.1", logs="stopped")
    assert refused.value.code == (
        "error: --ckpt_path stopped/digits/version_0/checkpoints/last.ckpt continues a run as it was trained, but this "
        "config's model differs: model.optimizer.init_args.lr 0.1 (checkpoint: 0.001). Resume with the run's own config "
        "(--config stopped/digits/version_0/config.yaml), or start a new run (no --ckpt_path) to train with these settings."
    )
    resumed = cli("digits", "fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", *common,
                  "--model.channels_last", "false", logs="stopped")  # how the model runs may change on resume
    assert resumed.model.hparams.channels_last is False  # the config's switch, not the checkpoint's (true)
    assert "Using stopped/digits/version_0/checkpoints/last.ckpt" in capsys.readouterr().out
    assert resumed.trainer.log_dir == "stopped/digits/version_0"  # the same run folder: its curves continue
    assert resumed.trainer.logger.version == 0  # what the progress bar shows as v_num
    assert not Path("stopped/digits/version_1").exists()
    straight = torch.load("straight/digits/version_0/checkpoints/last.ckpt", weights_only=True)
    continued = torch.load("stopped/digits/version_0/checkpoints/last.ckpt", weights_only=True)
    assert (continued["epoch"], continued["global_step"]) == (straight["epoch"], straight["global_step"]) == (1, 6)


def test_resume_that_would_outgrow_a_whole_run_schedule_is_refused(mnist_dir):
    # configs/mnist.yaml's OneCycleLR spans the run's steps (2 here): more epochs would make it fail part way.
    common = ("--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1")
    cli("mnist", "fit", "--trainer.max_epochs", "1", *common, data_dir=mnist_dir)
    last = Path("lightning_logs/mnist/version_0/checkpoints/last.ckpt")
    before = last.read_bytes()
    with pytest.raises(SystemExit, match=r"schedule was built for the 2 steps of the run that wrote it; this run takes 4"):
        cli("mnist", "fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", *common, data_dir=mnist_dir)
    assert last.read_bytes() == before


def test_whole_run_schedule_without_an_end_to_the_run_is_refused():
    onecycle = ("--model.scheduler", "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01")
    with pytest.raises(SystemExit) as done:
        cli("digits", "fit", "--trainer.max_epochs", "-1", *onecycle)
    assert done.value.code.startswith("error: model.scheduler plans its learning rates over the whole run's steps, "
                                      "and this run has no end (trainer.max_epochs -1 and no max_steps).")


def test_a_tilde_that_no_shell_expanded_means_home_in_every_path(tmp_path, monkeypatch):
    # A YAML value or --opt=~/x reaches the CLI with its "~": logs and checkpoints must both go under $HOME.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", logs="~/runs")
    last = tmp_path / "home" / "runs" / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file() and list(last.parents[1].glob("events.out.tfevents.*"))
    cli("digits", "predict", "--ckpt_path", "~/runs/digits/version_0/checkpoints/last.ckpt", "--predictions.output", "~/p.csv")
    assert (tmp_path / "home" / "p.csv").is_file()
    assert not (tmp_path / "~").exists()  # the working directory (tmp_path here) holds no folder named "~"


def test_predictions_that_cannot_be_written_are_named_before_predicting(capsys):
    Path("a_file").write_text("")
    with pytest.raises(SystemExit, match=r"cannot write predictions to a_file/sub: a_file is a file, not a folder\. .*--predictions.output"):
        cli("digits", "predict", "--predictions.output", "a_file/sub/predictions.csv")
    assert "Predicting" not in capsys.readouterr().err  # stopped before the work


def test_predictions_output_naming_a_folder_writes_predictions_csv_in_it(capsys):
    Path("results").mkdir()
    for folder in ("results", "new/"):  # an existing folder, or one to make
        cli("digits", "predict", "--predictions.output", folder)
        assert f"Wrote 359 predictions to {Path(folder) / 'predictions.csv'}\n" in capsys.readouterr().out
        assert len((Path(folder) / "predictions.csv").read_text().splitlines()) == 1 + 359


def test_evaluating_without_a_checkpoint_says_the_network_is_untrained(capsys):
    cli("digits", "validate", "--trainer.limit_val_batches", "1")
    assert "No --ckpt_path: validate runs the network as the config builds it, untrained." in capsys.readouterr().out


def test_ckpt_path_file_restores_the_trained_network(mnist_dir):
    cli("mnist", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", data_dir=mnist_dir)
    ckpt = next(Path("lightning_logs/mnist/version_0/checkpoints").glob("best-*.ckpt"))
    # The command line asks for another network; the checkpoint's own hyperparameters win, so its weights load.
    tested = cli("mnist", "test", "--ckpt_path", str(ckpt), "--model.net.hidden", "16", data_dir=mnist_dir)
    assert tested.model.net.classifier[1].out_features == 128


def test_compile_switch_trains_and_keeps_plain_checkpoint_keys():
    run = cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--model.compile", "true")
    assert "_compiled" in run.model.__dict__ and run.trainer.global_step == 2
    keys = torch.load("lightning_logs/digits/version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert all(key.startswith(("net.", "train_acc", "val_acc", "test_acc")) for key in keys) and "net.layers.1.weight" in keys


def test_print_config_shows_every_knob(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "svhn.yaml"), "--data.data_dir", "/some/where", "--print_config"])
    assert done.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["init_args"]["data_dir"] == "/some/where"
    assert [t["class_path"] for t in config["data"]["init_args"]["augment"]] == [
        "kornia.augmentation.RandomCrop",
        "kornia.augmentation.RandomRotation",
    ]
    assert config["model"]["init_args"]["net"]["class_path"] == "modules.nets.SVHNResNet"
    assert config["trainer"]["gradient_clip_val"] == 5.0


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


def test_ckpt_alias_without_a_run_says_what_to_do():
    with pytest.raises(SystemExit, match="no run under lightning_logs/digits/version_.*Train first with `fit`"):
        cli("digits", "test", "--ckpt_path", "best")


@pytest.mark.parametrize(
    "choice",
    [
        ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.05", "--model.optimizer.momentum", "0.9"],
        ["--model.optimizer", "torch.optim.RMSprop", "--model.optimizer.lr", "0.001"],
        ["--model.scheduler", "torch.optim.lr_scheduler.StepLR", "--model.scheduler.step_size", "1"],
        ["--model.scheduler", "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01"],
        ["--model.scheduler", "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01", "--model.scheduler.total_steps", "6"],
        ["--model.scheduler", "torch.optim.lr_scheduler.CyclicLR", "--model.scheduler.base_lr", "0.001", "--model.scheduler.max_lr", "0.01"],
    ],
    ids=["sgd-momentum", "rmsprop", "steplr", "onecycle", "onecycle-own-budget", "cyclic"],
)
def test_optimizer_and_scheduler_are_config_choices(choice):
    run = cli("digits", "fit", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", *choice)
    optimizer = run.trainer.optimizers[0]
    assert type(optimizer).__name__ == choice[1].rsplit(".", 1)[-1] or choice[0] == "--model.scheduler"
    if choice[0] == "--model.scheduler":
        config = run.trainer.lr_scheduler_configs[0]
        assert type(config.scheduler).__name__ == choice[1].rsplit(".", 1)[-1]
        assert config.interval == ("step" if "Cyclic" in choice[1] or "OneCycle" in choice[1] else "epoch")  # per batch
        if "OneCycle" in choice[1]:
            assert config.scheduler.total_steps == 6  # the run's whole step budget, from the trainer or as given
            assert config.scheduler.last_epoch == 6  # stepped after every batch, not once an epoch


def test_scheduler_budget_shorter_than_the_run_is_refused_before_it_starts():
    with pytest.raises(SystemExit, match=r"model.scheduler plans 5 steps and this run takes 6 \(max_epochs x steps an epoch\): it would fail part way"):
        cli("digits", "fit", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--model.scheduler",
            "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01", "--model.scheduler.total_steps", "5")


def test_plateau_scheduler_watching_accuracy_must_maximise():
    with pytest.raises(SystemExit, match=r"give --model.scheduler.mode max \(init_args.mode in a YAML file\)"):
        cli("digits", "fit", "--trainer.fast_dev_run", "true", "--model.scheduler_monitor", "val/acc")



def test_run_end_says_why_it_ended_and_a_finished_run_resumed_trains_nothing(capsys):
    common = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")
    cli("digits", "fit", *common)
    capsys.readouterr()
    resumed = cli("digits", "fit", *common, "--ckpt_path", "last")
    out = capsys.readouterr().out
    assert "Nothing to train: the checkpoint had already reached max_epochs=1." in out and resumed.trainer.global_step == 3
    # The printed commands, copied as they are. The run's config.yaml now holds its checkpoint and pins its run folder
    # (a resume continues in place), so a test of it asks for a run folder of its own.
    run = Path("lightning_logs/digits/version_0")
    test_it, train_on = (re.search(rf"{label}\s+python cli.py (.*)", out).group(1) for label in ("Test it:", "Train on:"))
    assert test_it.startswith(f"test --config {run}/config.yaml --trainer.logger.init_args.version null --ckpt_path {run}/checkpoints/best")
    assert main(shlex.split(test_it)).trainer.log_dir == str(run.with_name("version_1"))
    assert yaml.safe_load((run / "config.yaml").read_text())["ckpt_path"] == f"{run}/checkpoints/last.ckpt"  # the fit's, kept
    assert train_on == f"fit --config {run}/config.yaml --ckpt_path {run}/checkpoints/last.ckpt --trainer.max_epochs N (N above 1)"
    trained_on = main(shlex.split(train_on.replace("N (N above 1)", "2")))
    assert trained_on.trainer.global_step == 6 and trained_on.trainer.log_dir == str(run)
    history = logged_epochs(trained_on.trainer)  # the curves picture's points: the epoch before the resume too
    assert sorted(history["val/acc"]) == sorted(history["train/loss"]) == [0, 1] and (run / "curves.png").is_file()
    capsys.readouterr()
    # An early stop that must come at the second validation: the loss cannot fall by 100.
    stopping = ["--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping", "--trainer.callbacks.monitor=val/loss",
                "--trainer.callbacks.min_delta=100", "--trainer.callbacks.patience=1"]
    cli("digits", "fit", "--trainer.max_epochs", "9", "--trainer.limit_train_batches", "3", *stopping)
    out = capsys.readouterr().out
    assert "Early stopping ended the run after epoch 1: val/loss had stopped improving (patience 1)." in out
    assert "Train on:" not in out
    # Resumed, with every validation now an improvement: the budget ends it, though its early stopping state (restored
    # from the checkpoint) still holds the epoch it stopped at before.
    improving = [*stopping[:2], "--trainer.callbacks.min_delta=-100", stopping[3]]
    cli("digits", "fit", "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "3", *improving, "--ckpt_path", "last")
    out = capsys.readouterr().out
    assert "Early stopping ended" not in out and "--trainer.max_epochs N (N above 3)" in out
    timed = cli("digits", "fit", "--trainer.max_epochs", "99", "--trainer.max_time", "00:00:00:01")  # ~500 steps a second
    out = capsys.readouterr().out
    assert f"step {timed.trainer.global_step}, its trainer.max_time used up." in out and timed.trainer.current_epoch < 99
    last = f"{timed.trainer.log_dir}/checkpoints/last.ckpt"
    assert f"--ckpt_path {last} --trainer.max_time DD:HH:MM:SS (longer: it counts the time already trained)" in out


def test_a_fit_resumed_part_way_through_an_epoch_that_trains_is_not_called_one_with_nothing_to_train(capsys):
    # last.ckpt every 20 steps: stopped at step 25, it holds step 20, part way through the first epoch.
    with pytest.raises(SystemExit, match="refused at step 25"):
        cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.callbacks+=tests.killer.RefuseAtStep", "--trainer.callbacks.step=25")
    resumed = cli("digits", "fit", "--trainer.max_epochs", "1", "--ckpt_path", "last")  # the rest of epoch 0 only
    assert resumed.trainer.global_step > 20 and resumed.trainer.current_epoch == 1
    assert "Nothing to train" not in capsys.readouterr().out


def test_evaluating_on_another_draw_of_the_validation_split_is_refused():
    cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3")
    for other in (["--data.val_split", "0.2"], ["--data.seed", "7"]):
        with pytest.raises(SystemExit, match=r"its validation split would hold images the checkpoint trained on. Use "
                           r"--data.val_split 0.1 --data.seed 42"):
            cli("digits", "validate", "--ckpt_path", "last", *other)
    tested = cli("digits", "test", "--ckpt_path", "last", "--data.val_split", "0.2")  # digits' own test split: unaffected
    assert "test/acc" in tested.trainer.callback_metrics

def test_plateau_scheduler_steps_after_the_epochs_that_validate():
    # digits.yaml's ReduceLROnPlateau watches val/loss; validating every 2nd epoch, it steps every 2nd epoch.
    run = cli("digits", "fit", "--trainer.max_epochs", "4", "--trainer.limit_train_batches", "3",
              "--trainer.check_val_every_n_epoch", "2")
    assert run.trainer.current_epoch == 4 and run.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2


def test_hook_bookkeeping_skips_nn_module_setattr_and_the_rest_keeps_it(monkeypatch):
    model = ClassifierModule(net=partial(MLP, in_features=64), class_names=["a", "b"])
    keys, through_nn_module, extra = set(model.state_dict()), [], torch.nn.Linear(2, 2)
    module_setattr = torch.nn.Module.__setattr__
    monkeypatch.setattr(torch.nn.Module, "__setattr__", lambda m, name, value: through_nn_module.append(name) or module_setattr(m, name, value))
    model._current_fx_name = "training_step"  # Lightning's bookkeeping, ~44 times a step: a plain attribute
    assert model._current_fx_name == "training_step" and set(model.state_dict()) == keys and not through_nn_module
    model.extra = extra  # everything else still goes through nn.Module's registration
    model.scale = torch.nn.Parameter(torch.ones(1))
    assert {"extra.weight", "extra.bias", "scale"} <= set(model.state_dict()) and through_nn_module == ["extra", "scale"]


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


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data.batch_size", "eight"], "batch_size"),  # wrong type
        # Typos: the option meant, from the class's signature or the parser's options.
        (["--data.batch_sise", "8"], "error: --data.batch_sise: Digits takes no 'batch_sise'; did you mean --data.batch_size? "
         "Its options: data_dir, batch_size, val_split, seed, download, num_workers, augment, transforms, predict_dir.\n"),
        (["--model.net.hiden", "[10]"], "error: --model.net.hiden: MLP takes no 'hiden'; did you mean --model.net.hidden? "),
        (["--model.optimizer.betaz", "[0.9,0.99]"], "error: --model.optimizer.betaz: Adam takes no 'betaz'; did you mean "
         "--model.optimizer.betas? Its options: params, lr, betas, "),
        (["--trainer.max_epochz", "5"], "error: --trainer.max_epochz: no such option; did you mean --trainer.max_epochs? "),
        (["--config", "trainer: {max_epoch: 5}"], "error: --trainer.max_epoch: no such option; did you mean --trainer.max_epochs? "),
        (["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitr=val/acc"],
         "error: --trainer.callbacks.monitr: EarlyStopping takes no 'monitr'; did you mean --trainer.callbacks.monitor? "),
        # A class that is not there, or one without an argument it needs.
        (["--model.optimizer", "torch.optim.SDG"], "error: --model.optimizer torch.optim.SDG: torch.optim has no 'SDG'; "
         "did you mean torch.optim.SGD?\n"),
        (["--model.scheduler", "StepLR"], "error: --model.scheduler torch.optim.lr_scheduler.StepLR needs "
         "--model.scheduler.step_size VALUE.\n"),
    ],
)
def test_config_mistakes_are_named(arguments, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "digits.yaml"), *arguments])
    assert done.value.code == 2
    error = capsys.readouterr().err
    assert "error:" in error and message in error


def test_a_missing_config_or_no_task_lists_the_task_configs(tmp_path, capsys):
    # The working folder is the test's, not the project's: relative config paths are not found.
    names = ", ".join(f"configs/{p.name}" for p in sorted(CONFIGS.glob("*.yaml")))
    tasks = f"Task configs: {names} (in {CONFIGS.parent}: run from there, or give their full paths)."
    for arguments, what in [
        (["fit"], "fit needs a task: python cli.py fit --config configs/<task>.yaml."),
        (["test", "--config", "configs/mnist.yaml"], f"--config configs/mnist.yaml does not exist (looked in {tmp_path})."),
        (["fit", f"--config={CONFIGS}"], f"--config {CONFIGS} is a folder, not a config file."),
    ]:
        with pytest.raises(SystemExit) as done:
            main(arguments)
        assert done.value.code == f"error: {what} {tasks}", arguments
    # A task config before the subcommand is read as the whole program's (a section per subcommand).
    with pytest.raises(SystemExit) as done:
        main(["-c", str(CONFIGS / "digits.yaml"), "test", "--ckpt_path", "best"])
    assert done.value.code == f"error: --config goes after the subcommand: python cli.py test -c {CONFIGS / 'digits.yaml'} --ckpt_path best"
    whole = tmp_path / "whole.yaml"  # which LightningCLI takes there
    whole.write_text("fit:\n  trainer:\n    max_epochs: 7\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["--config", str(whole), "fit", "--print_config"])
    assert done.value.code == 0 and "max_epochs: 7" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:  # every knob's default, no task needed
        main(["fit", "--print_config"])
    assert done.value.code == 0 and "test_after_fit: false" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model.label_smoothing", "1.5"], "label_smoothing=1.5: give a share between 0 (none) and 1."),
        (["--trainer.devices", "0"], "`Trainer(devices='0')` value is not a valid input using cpu accelerator."),  # Lightning's
        (["--trainer.barebones", "true"], "trainer.barebones is Lightning's mode for timing its own loop: it forbids "
         "self.log, and so the metrics, checkpoints and early stopping every config relies on. Leave it off; "
         "benchmarks/compare.py times Lightning's loop against a hand-written one."),
        (["--data.batch_size", "1"], "batch_size=1: the network's BatchNorm1d normalises each channel over the batch, "
         "and a batch of one image gives it a single value per channel (training would stop at its first step). Use "
         "--data.batch_size 2 or more, or a network without BatchNorm."),
        (["--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.5"], TOP_LEVEL_OPTIMIZER.format("--optimizer")),
        (["--lr_scheduler", "torch.optim.lr_scheduler.StepLR"], TOP_LEVEL_OPTIMIZER.format("--lr_scheduler")),
    ],
)
def test_impossible_settings_stop_with_the_message_alone(arguments, message):
    with pytest.raises(SystemExit) as done:
        cli("digits", "fit", "--trainer.fast_dev_run", "true", *arguments)
    assert done.value.code == f"error: {message}"  # no traceback: the message says what to change


@pytest.mark.parametrize(("setting", "message"), [
    (["--trainer.accelerator", "gpux"], r"You selected an invalid accelerator name: `accelerator='gpux'`. Available names are: auto, .*cpu"),
    (["--trainer.strategy", "ddpx"], r"You selected an invalid strategy name: `strategy='ddpx'`. .* Example choices: auto, ddp, "),
])
def test_a_misspelt_device_setting_stops_with_lightnings_message_alone(setting, message):
    with pytest.raises(SystemExit) as done:  # Lightning raises a plain ValueError for these
        cli("digits", "fit", "--trainer.fast_dev_run", "true", *setting)
    assert re.fullmatch(f"error: {message}.*", done.value.code)


def test_a_run_refused_before_its_first_step_leaves_no_run_folder_and_one_refused_later_keeps_its_own():
    runs = Path("lightning_logs/digits")
    with pytest.raises(SystemExit, match="validation is off"):  # refused as the trainer starts, after config.yaml
        cli("digits", "fit", "--trainer.limit_val_batches", "0")
    with pytest.raises(SystemExit, match="model.scheduler plans 5 steps"):  # refused in configure_optimizers
        cli("digits", "fit", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--model.scheduler",
            "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01", "--model.scheduler.total_steps", "5")
    assert not list(runs.glob("version_*"))
    with pytest.raises(SystemExit, match="refused at step 2"):
        cli("digits", "fit", "--trainer.callbacks+=tests.killer.RefuseAtStep", "--trainer.callbacks.step=2",
            "--trainer.enable_checkpointing", "false")
    assert [p.name for p in runs.glob("version_*")] == ["version_0"] and list(runs.glob("version_0/events.out.tfevents.*"))


def test_data_warnings_show_as_their_message_alone_and_others_as_python_shows_them():
    assert warnings.formatwarning is cli_module.format_warning  # set as cli.py is imported
    with pytest.warns(DataWarning, match="Skipped 1 unreadable"):  # what the data modules warn with
        report_skipped(["photos/empty.jpg: empty file (0 bytes)."], Path("photos"))
    skipped = "Skipped 1 unreadable image file(s) in photos:\n  photos/empty.jpg: empty file (0 bytes)."
    assert warnings.formatwarning(skipped, DataWarning, "datamodules/base.py", 100, "rank_zero_warn(...)") == f"Warning: {skipped}\n"
    other = warnings.formatwarning("deprecated", UserWarning, "/site-packages/somelib.py", 7, "warn(...)")
    assert other.startswith("/site-packages/somelib.py:7: UserWarning: deprecated")


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


def test_run_configs_holding_the_top_level_optimizer_keys_unset_still_load(tmp_path):
    # Every run's config.yaml written before those keys were refused holds them as null.
    config = yaml.safe_load((CONFIGS / "digits.yaml").read_text()) | {"optimizer": None, "lr_scheduler": None}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = main(["fit", "--config", str(tmp_path / "config.yaml"), "--trainer.fast_dev_run", "true"])
    assert type(run.trainer.optimizers[0]).__name__ == "Adam"  # the model's, with its schedule
    assert type(run.trainer.lr_scheduler_configs[0].scheduler).__name__ == "ReduceLROnPlateau"


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_precisions_that_change_the_model_dtype_train_validate_and_test(precision):
    run = cli("digits", "fit", "--trainer.fast_dev_run", "true", "--trainer.precision", precision, "--test_after_fit", "true")
    assert run.model.net.layers[1].weight.dtype == {"64-true": torch.float64, "bf16-true": torch.bfloat16}[precision]
    assert run.trainer.state.finished


def test_checkpoint_of_another_task_names_both_class_lists(cifar_pickle_dir, mnist_dir):
    cli("cifar10", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", data_dir=cifar_pickle_dir)
    ckpt = "lightning_logs/cifar10/version_0/checkpoints/last.ckpt"
    with pytest.raises(SystemExit, match=r"was trained on classes \['airplane', .*'truck'\], but the data has classes \['0', .*'9'\]"):
        cli("mnist", "test", "--ckpt_path", ckpt, data_dir=mnist_dir)



def test_checkpoint_of_other_image_shape_is_refused_where_its_network_cannot_take_it(mnist_dir):
    # digits and MNIST share class names ('0'-'9'); the digits MLP takes 8x8 images only.
    cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1")
    ckpt = "lightning_logs/digits/version_0/checkpoints/last.ckpt"
    with pytest.raises(SystemExit, match=r"was trained on images of shape \(1, 8, 8\) .* cannot take this data's \(1, 28, 28\)"):
        cli("mnist", "test", "--ckpt_path", ckpt, data_dir=mnist_dir)

FREE_AND_ALLOCATE = """
import resource, sys
if sys.argv[1] == "keep":
    from cli import keep_freed_memory
    keep_freed_memory()
block = bytearray(20 * 2**20)
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # what a training step does with its activations: allocate, free, again
    a, b = bytearray(20 * 2**20), bytearray(20 * 2**20)
    del a, b
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, **env: str) -> int:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    run = subprocess.run([sys.executable, "-c", FREE_AND_ALLOCATE, mode], capture_output=True, text=True, check=True,
                         env={**environment, **env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return int(run.stdout.split()[-1])


def test_freed_memory_is_kept_for_reuse_unless_the_user_tunes_malloc(monkeypatch):
    default = faults("default")
    assert default > 5 * 5000  # glibc trims freed blocks off the heap: their pages fault in again (5,000 per 20 MiB)
    assert faults("keep") < default / 5
    # The user's own malloc settings win: the C library is not even opened.
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setattr(cli_module.ctypes, "CDLL", lambda name: pytest.fail(f"opened {name}"))
    keep_freed_memory()


def test_without_the_nvidia_driver_optimizer_steps_stop_trying_to_load_it(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as importing Lightning sets it
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    loads = []

    def absent(name, *args, **kwargs):
        loads.append(name)
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(cli_module.ctypes, "CDLL", absent)  # torch imports CDLL from ctypes when it checks
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters())

    def step():
        net(torch.ones(1, 2)).sum().backward()
        optimizer.step()

    step()
    if torch.backends.cuda.is_built() and not torch.cuda.is_initialized():  # a CUDA build asks NVML at every step
        assert loads == ["libnvidia-ml.so.1"]
    skip_absent_nvml()
    loads.clear()
    step()
    step()
    assert loads == []
    # Where the driver's library loads, the check stays NVML-based: forked DataLoader workers keep a usable GPU.
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(cli_module.ctypes, "CDLL", lambda name: object())
    skip_absent_nvml()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"


def test_a_run_claims_its_folder_before_preparing_data_and_leaves_none_when_it_fails(monkeypatch):
    # Another run, started at the same moment, numbers its folder (Lightning's rule: one above the newest)
    # while this one prepares its data.
    others, prepare = [], Digits.prepare_data

    def prepare_beside_another_run(self):
        other = L.pytorch.loggers.TensorBoardLogger("lightning_logs", name="digits")
        Path(other.log_dir, "checkpoints").mkdir(parents=True)
        others.append(Path(other.log_dir))
        prepare(self)

    monkeypatch.setattr(Digits, "prepare_data", prepare_beside_another_run)
    run = cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2")
    ours = Path(run.trainer.log_dir)
    assert (ours, others) == (Path("lightning_logs/digits/version_0"), [Path("lightning_logs/digits/version_1")])
    assert list((ours / "checkpoints").iterdir()) and not list((others[0] / "checkpoints").iterdir())
    # The run's config still asks for a new folder: commands made from it start their own run.
    assert yaml.safe_load((ours / "config.yaml").read_text())["trainer"]["logger"]["init_args"]["version"] is None
    # A run refused before it starts leaves no folder; one that crashes before writing anything leaves none at exit.
    removals, register = [], cli_module.atexit.register
    monkeypatch.setattr(cli_module.atexit, "register", lambda f, *a: removals.append(a) if f is cli_module.remove_if_empty else register(f, *a))
    with pytest.raises(SystemExit, match="cannot take this data's images"):
        cli("digits", "fit", "--model.net.init_args.in_features", "10")
    assert not Path("lightning_logs/digits/version_2").exists()
    monkeypatch.setattr(Digits, "prepare_data", lambda self: 1 / 0)  # not a user error: no message, the traceback
    with pytest.raises(ZeroDivisionError):
        cli("digits", "fit")
    assert not any(Path("lightning_logs/digits/version_2").iterdir())
    for folders in removals:
        cli_module.remove_if_empty(*folders)
    assert sorted(p.name for p in Path("lightning_logs/digits").iterdir()) == ["version_0", "version_1"]


def test_a_checkpoint_path_that_is_a_folder_or_not_there_says_what_to_give(tmp_path):
    run = tmp_path / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"--ckpt_path \S+/version_0 is a folder: give a checkpoint file in it \(checkpoints/last\.ckpt\)\.$"):
        cli("digits", "test", "--ckpt_path", str(run))
    with pytest.raises(SystemExit, match=r"--ckpt_path nothere\.ckpt does not exist \(looked in \S+\)\. Give the path of a \.ckpt file, or last or best"):
        cli("digits", "test", "--ckpt_path", "nothere.ckpt")


def test_max_steps_part_way_through_an_epoch_validates_before_stopping():
    # digits: 41 steps an epoch. Early stopping, the plateau scheduler and the best checkpoint all watch val/ metrics.
    run = cli("digits", "fit", "--trainer.max_steps", "5", "--data.batch_size", "32")
    assert run.trainer.global_step == 5 and "val/acc" in run.trainer.callback_metrics
    assert list(Path("lightning_logs/digits/version_0/checkpoints").glob("best-epoch=0-*.ckpt"))


def test_a_run_ended_by_its_step_budget_goes_on_counted_in_epochs(capsys):
    """Lightning resumes a step-counted run from an epoch's end wrongly (issue #19617; a step budget ends the epoch it
    stops in, after its validation): refused, with the form that works, which is also what the run's end suggests."""
    epoch = ("--data.batch_size", "32", "--trainer.limit_train_batches", "5")  # 5 steps an epoch
    last = Path("lightning_logs/digits/version_0/checkpoints/last.ckpt")
    cli("digits", "fit", *epoch, "--trainer.max_steps", "3")
    told = f"--ckpt_path {last} --trainer.max_steps -1 --trainer.max_epochs N (N above 1; Lightning resumes it counted in epochs only)"
    assert told in capsys.readouterr().out
    before = last.read_bytes()
    with pytest.raises(SystemExit, match=r"written as epoch 0 ended \(step 3\), and Lightning cannot resume a run counted in steps "
                       r"\(trainer.max_steps\) from there. Count the rest in epochs: --trainer.max_steps -1 --trainer.max_epochs N \(N above 1\)"):
        cli("digits", "fit", *epoch, "--trainer.max_steps", "6", "--ckpt_path", "last")
    assert last.read_bytes() == before
    resumed = cli("digits", "fit", *epoch, "--trainer.max_steps", "-1", "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 8 and "val/acc" in resumed.trainer.callback_metrics
