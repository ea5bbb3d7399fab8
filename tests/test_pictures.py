"""What a run shows: TensorBoard scalars, pictures and hparams, read back with TensorBoard's own reader."""

import csv
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cli import main
from modules.pictures import TensorBoardPictures, image_grid, logged_epochs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Raised inside Lightning 2.6 itself, not by this project (see pyproject.toml's filterwarnings).
LIGHTNING_INTERNAL = ("isinstance(treespec, LeafSpec)", "deprecated in v4.49.0")


@pytest.fixture(autouse=True)
def run_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def hparams_metrics(accumulator: EventAccumulator) -> list[str]:
    content = accumulator.PluginTagToContent("hparams")["_hparams_/experiment"]
    return [m.name.tag for m in plugin_data_pb2.HParamsPluginData.FromString(content).experiment.metric_infos]


def test_fit_and_test_write_scalars_pictures_and_hparams(mnist_dir):
    common = ["--config", str(CONFIGS / "mnist.yaml"), "--data.data_dir", str(mnist_dir), "--data.batch_size", "8"]
    common += ["--trainer.accelerator", "cpu", "--trainer.log_every_n_steps", "1"]
    fit = main(["fit", *common, "--trainer.max_epochs", "2"])
    run = events(Path("lightning_logs/mnist/version_0"))
    scalars = set(run.Tags()["scalars"])
    per_class = {f"val/{metric}/{name}" for metric in ("precision", "recall", "f1") for name in fit.datamodule.class_names}
    assert {"train/loss", "train/loss_step", "train/acc", "val/loss", "val/acc", "lr-Adam"} <= scalars
    assert {"train/epoch_time_s", "train/images_per_s"} <= scalars and per_class <= scalars
    assert {"inputs", "confusion_matrix/val"} <= set(run.Tags()["images"])
    assert run.Tags()["graph"] and "aten::_convolution" in {node.op for node in run.Graph().node}
    assert len(run.Images("confusion_matrix/val")) == 2  # one per validation epoch
    inputs = run.Images("inputs")[0]
    assert inputs.width >= 1000 and inputs.height >= 150  # one row of the 8 images of a batch, each readable
    assert {"final/val/acc", "best/val_acc"} <= set(hparams_metrics(run))
    assert fit.model.latest_confusion["val"].sum() == len(fit.datamodule.val_set)  # every validation image counted
    png = Path("lightning_logs/mnist/version_0/confusion_matrix_val.png").read_bytes()
    assert run.Images("confusion_matrix/val")[-1].encoded_image_string == png  # one PNG, on disk and in TensorBoard
    history = logged_epochs(fit.trainer)  # the curves' points: every epoch's, as logged
    assert history["val/acc"] == {0: run.Scalars("val/acc")[0].value, 1: run.Scalars("val/acc")[1].value}
    assert sorted(history) == ["train/acc", "train/loss", "val/acc", "val/loss"] and sorted(history["train/loss"]) == [0, 1]
    curves = Path("lightning_logs/mnist/version_0/curves.png").read_bytes()
    assert run.Images("curves")[-1].encoded_image_string == curves

    tested = main(["test", *common, "--ckpt_path", "best"])
    test_run = events(Path(tested.trainer.log_dir))
    assert {"confusion_matrix/test", "misclassified/test"} <= set(test_run.Tags()["images"])
    assert tested.model.latest_confusion["test"].sum() == len(tested.datamodule.test_set)
    assert {f"test/f1/{name}" for name in tested.datamodule.class_names} <= set(tested.trainer.callback_metrics)
    assert {"test/acc", "test/loss"} <= set(hparams_metrics(test_run))


def test_a_picture_after_lightning_closed_the_event_file_reopens_it(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = SimpleNamespace(logger=logger, loggers=[logger], global_step=3)
    Path(logger.log_dir).mkdir(parents=True)  # a run's folder, made as its fit starts
    pixels = np.full((4, 6, 3), 200, dtype=np.uint8)
    pictures = TensorBoardPictures()
    pictures._log_picture(trainer, "before", pixels)
    logger.finalize("success")  # as Lightning does when a fit or test ends
    assert logger.experiment.file_writer is None
    pictures._log_picture(trainer, "after", pixels)
    logger.experiment.flush()
    run = events(Path(logger.log_dir))
    assert run.Images("before")[0].encoded_image_string == Path(logger.log_dir, "before.png").read_bytes()
    after = run.Images("after")[0]
    assert (after.step, after.width, after.height) == (3, 6, 4) and Path(logger.log_dir, "after.png").is_file()


def test_image_grid_places_every_image_pixel_for_pixel_under_its_caption():
    images = torch.stack([torch.full((1, 28, 28), 0.0), torch.full((1, 28, 28), 0.5)])
    images[1, :, 0, 0] = 1.0  # one bright corner pixel: the scaling repeats whole pixels
    pixels = image_grid(images, ["zero", "half"], tile=140)
    band, pad, tile = 13 + 6, 8, 140
    assert pixels.shape == (pad + band + tile + pad, pad + 2 * (tile + pad), 3)
    first = pixels[pad + band :, pad : pad + tile]
    second = pixels[pad + band :, 2 * pad + tile : 2 * (pad + tile)]
    assert (first[:tile] == 0).all() and (second[5:tile, 5:] == 128).all() and (second[:5, :5] == 255).all()
    assert pixels[pad : pad + band, pad : pad + tile].min() < 100  # the caption's dark text in the band above


def test_a_normal_fit_prints_no_warnings(mnist_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", "--config", str(CONFIGS / "mnist.yaml"), "--data.data_dir", str(mnist_dir), "--data.batch_size", "8",
              "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1"])
    ours = [str(w.message) for w in caught if not any(text in str(w.message) for text in LIGHTNING_INTERNAL)]
    assert ours == []


def test_csv_logger_for_headless_use(mnist_dir, capsys):
    main(["fit", "--config", str(CONFIGS / "mnist.yaml"), "--data.data_dir", str(mnist_dir), "--data.batch_size", "8",
          "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1",
          "--trainer.logger", "modules.loggers.CSVRunLogger",
          "--trainer.logger.init_args.save_dir", "csv_logs", "--trainer.logger.init_args.name", "mnist",
          "--model.scheduler", "null"])  # MNIST's OneCycleLR spans the run: without it, the run can be resumed for more
    run = Path("csv_logs/mnist/version_0")
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/acc", "val/f1/3", "train/images_per_s"} <= set(header)
    assert (run / "confusion_matrix_val.png").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "curves.png").is_file()  # read back from metrics.csv
    assert f"Logs and checkpoints: {run}  (metrics in metrics.csv)\n" in capsys.readouterr().out  # not TensorBoard
    with warnings.catch_warnings(record=True) as caught:  # resumed: Lightning's writer would delete epoch 0's rows
        warnings.simplefilter("always")
        main(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
              "--trainer.max_epochs", "2"])
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert {row["epoch"] for row in rows if row.get("val/acc")} == {"0", "1"}  # both epochs' validation
    assert rows[0].keys() >= set(header) and not list(run.glob(".metrics.csv*"))
