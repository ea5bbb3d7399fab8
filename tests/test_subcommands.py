"""fit, validate, test and predict end to end through ``cli.py``, on tiny data in each dataset's real format."""

import csv
import re
import shlex
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cli import main
from tests.conftest import N_TEST
from tests.runs import TASK_DATA, data_for
from tests.runs import cli, run_in_tmp  # noqa: F401 (run_in_tmp: a fixture)

pytestmark = pytest.mark.usefixtures("run_in_tmp")

@pytest.mark.slow
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


@pytest.mark.slow
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


def test_running_loss_logging_can_be_switched_off():
    run = cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.log_every_n_steps", "0")
    assert "train/loss_step" not in run.trainer.callback_metrics and "train/loss" in run.trainer.callback_metrics


@pytest.mark.slow
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


def test_predictions_that_cannot_be_written_are_named_before_predicting(capsys):
    Path("a_file").write_text("")
    with pytest.raises(SystemExit, match=r"cannot write predictions to a_file/sub: a_file is a file, not a folder\. .*--predictions.output"):
        cli("digits", "predict", "--predictions.output", "a_file/sub/predictions.csv")
    assert "Predicting" not in capsys.readouterr().err  # stopped before the work


@pytest.mark.slow
def test_predictions_output_naming_a_folder_writes_predictions_csv_in_it(capsys):
    Path("results").mkdir()
    for folder in ("results", "new/"):  # an existing folder, or one to make
        cli("digits", "predict", "--predictions.output", folder)
        assert f"Wrote 359 predictions to {Path(folder) / 'predictions.csv'}\n" in capsys.readouterr().out
        assert len((Path(folder) / "predictions.csv").read_text().splitlines()) == 1 + 359


def test_evaluating_without_a_checkpoint_says_the_network_is_untrained(capsys):
    cli("digits", "validate", "--trainer.limit_val_batches", "1")
    assert "No --ckpt_path: validate runs the network as the config builds it, untrained." in capsys.readouterr().out


@pytest.mark.slow
def test_ckpt_path_file_restores_the_trained_network(mnist_dir):
    cli("mnist", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", data_dir=mnist_dir)
    ckpt = next(Path("lightning_logs/mnist/version_0/checkpoints").glob("best-*.ckpt"))
    # The command line asks for another network; the checkpoint's own hyperparameters win, so its weights load.
    tested = cli("mnist", "test", "--ckpt_path", str(ckpt), "--model.net.hidden", "16", data_dir=mnist_dir)
    assert tested.model.net.classifier[1].out_features == 128


@pytest.mark.slow
def test_compile_switch_trains_and_keeps_plain_checkpoint_keys():
    run = cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--model.compile", "true")
    assert "_compiled" in run.model.__dict__ and run.trainer.global_step == 2
    keys = torch.load("lightning_logs/digits/version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert all(key.startswith(("net.", "train_acc", "val_acc", "test_acc")) for key in keys) and "net.layers.1.weight" in keys


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_precisions_that_change_the_model_dtype_train_validate_and_test(precision):
    run = cli("digits", "fit", "--trainer.fast_dev_run", "true", "--trainer.precision", precision, "--test_after_fit", "true")
    assert run.model.net.layers[1].weight.dtype == {"64-true": torch.float64, "bf16-true": torch.bfloat16}[precision]
    assert run.trainer.state.finished


def test_max_steps_part_way_through_an_epoch_validates_before_stopping():
    # digits: 41 steps an epoch. Early stopping, the plateau scheduler and the best checkpoint all watch val/ metrics.
    run = cli("digits", "fit", "--trainer.max_steps", "5", "--data.batch_size", "32")
    assert run.trainer.global_step == 5 and "val/acc" in run.trainer.callback_metrics
    assert list(Path("lightning_logs/digits/version_0/checkpoints").glob("best-epoch=0-*.ckpt"))
