"""Pictures for TensorBoard and the run folder: what the network is fed, how it learned, where it confuses classes,
what it gets wrong, what it predicts."""

import csv
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor, nn
from torch.nn import functional
from torchvision.transforms import v2
from torchvision.utils import make_grid
from tqdm import tqdm

from modules.callbacks import blank_input, from_every_process, run_dir

DPI = 100
CURVES = ("train/loss", "val/loss", "train/acc", "val/acc")


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn off-screen (no pyplot, no window, nothing global to close)."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def render(figure: Figure) -> np.ndarray:
    """The figure's pixels (H, W, 3) uint8, drawn once for both the PNG file and TensorBoard."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def confusion_matrix_figure(counts: Tensor, class_names: list[str]) -> Figure:
    """Counts in the cells, colour by share of the true class (rows), class names on both axes."""
    counts = counts.cpu().double()
    share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(class_names)
    side = min(4 + 0.45 * n, 16)
    figure = new_figure(side, side)
    axes = figure.subplots()
    edges = np.arange(n + 1) - 0.5  # cells centred on whole numbers, as imshow would (its resampling cost ~24 MiB)
    axes.pcolormesh(edges, edges, share.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set_aspect("equal")
    axes.invert_yaxis()  # the first true class on top
    axes.set_xticks(range(n), class_names, rotation=45, ha="right")
    axes.set_yticks(range(n), class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if n <= 30:
        for row in range(n):
            for col in range(n):
                colour = "white" if share[row, col] > 0.5 else "black"
                axes.text(col, row, int(counts[row, col]), ha="center", va="center", color=colour, fontsize=8)
    axes.set_title(f"{int(counts.sum())} images: counts, coloured by share of the true class", fontsize=9)
    figure.tight_layout()
    return figure


def curves_figure(history: dict[str, dict[int, float]]) -> Figure:
    """Loss and accuracy per epoch, training against validation (the plot the course notebooks end with); a star
    on the best validation accuracy."""
    figure = new_figure(10, 4)
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "acc")):
        for stage in ("train", "val"):
            if points := sorted(history.get(f"{stage}/{metric}", {}).items()):
                axes.plot(*zip(*points), marker="o", markersize=3, label=stage)
        if metric == "acc" and history.get("val/acc"):
            epoch, best = max(history["val/acc"].items(), key=lambda item: (item[1], -item[0]))
            axes.plot([epoch], [best], marker="*", markersize=14, color="gold", markeredgecolor="black", linestyle="none",
                      label=f"best val {best:.2%} (epoch {epoch})")
        axes.set(xlabel="epoch", title={"loss": "loss", "acc": "accuracy"}[metric])
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return figure


def logged_epochs(trainer: L.Trainer) -> dict[str, dict[int, float]]:
    """Each epoch's loss and accuracy as the run's logger recorded them, ``{metric: {epoch: value}}``: read back from
    its files, so a resumed run's earlier epochs are there too (a value logged twice for an epoch: the later)."""
    logger, history = trainer.logger, {name: {} for name in CURVES}
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.flush()
        events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0})  # 0: every point
        tensorboard_log = logging.getLogger("tensorboard")
        level = tensorboard_log.level
        tensorboard_log.setLevel(logging.ERROR)  # a resumed run's second graph: "more than one run metadata event"
        try:
            events.Reload()
        finally:
            tensorboard_log.setLevel(level)
        tags = set(events.Tags()["scalars"])
        epoch_at = {e.step: int(e.value) for e in events.Scalars("epoch")} if "epoch" in tags else {}  # Lightning logs it
        for name in tags.intersection(CURVES):
            history[name] = {epoch_at[e.step]: e.value for e in events.Scalars(name) if e.step in epoch_at}
    elif isinstance(logger, CSVLogger):
        logger.save()
        with open(logger.experiment.metrics_file_path, newline="") as f:
            for row in csv.DictReader(f):
                for name in CURVES:
                    if row.get(name):
                        history[name][int(float(row["epoch"]))] = float(row[name])
    return {name: values for name, values in history.items() if values}


def image_grid(images: Tensor, captions: list[str], columns: int = 8, tile: int = 160) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] as one mosaic (H, W, 3) uint8, each with its caption above it.

    The images are scaled to about ``tile`` pixels wide (whole pixels repeated up, antialiased down) and laid
    out here; matplotlib draws only the captions, on white, and the mosaic is laid over that: 4-5 MiB of
    temporaries. ``imshow`` resampled the mosaic in float32 RGBA: 60-150 MiB for one picture.
    """
    images = images.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] > tile:
        images = functional.interpolate(images, scale_factor=tile / images.shape[-1], mode="bilinear", antialias=True)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    if images.shape[-1] < tile:
        factor = tile // images.shape[-1]
        images = images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    n, _, height, width = images.shape
    columns = min(columns, n)
    lines = max(caption.count("\n") + 1 for caption in captions)
    band, pad = 13 * lines + 6, 8  # room above each image for its caption (~13 px a line at 8 pt), between images
    tiles = torch.full((n, 3, band + height, width), 255, dtype=torch.uint8)
    tiles[:, :, band:] = images
    mosaic = make_grid(tiles, nrow=columns, padding=pad, pad_value=255).permute(1, 2, 0).numpy()
    rows, cols = mosaic.shape[:2]
    figure = new_figure((cols + 0.5) / DPI, (rows + 0.5) / DPI)  # exactly cols x rows pixels once drawn
    for i, caption in enumerate(captions):
        row, column = divmod(i, columns)
        x = pad + column * (width + pad) + width / 2
        y = pad + row * (band + height + pad) + band - 2  # pixels from the top: just above the image
        figure.text(x / cols, 1 - y / rows, caption, ha="center", va="bottom", fontsize=8)
    return np.minimum(render(figure), mosaic)  # dark caption text on the white bands, the images elsewhere


def undo_normalize(images: Tensor, transforms: nn.Module) -> Tensor:
    """Reverse the ``Normalize`` in a DataModule's transforms, so a person recognises the images."""
    for transform in transforms.modules():
        if isinstance(transform, v2.Normalize):
            mean = torch.tensor(transform.mean, device=images.device).view(1, -1, 1, 1)
            std = torch.tensor(transform.std, device=images.device).view(1, -1, 1, 1)
            images = images * std + mean
    return images.clamp(0, 1)


class TensorBoardPictures(L.Callback):
    """Logs, under the run's TensorBoard folder and as PNG files beside it:

    - the network's graph, and ``inputs``: the first training batch after augmentation, de-normalised,
      once at fit start;
    - ``confusion_matrix/val`` after every validation epoch, ``confusion_matrix/test`` after a test;
    - ``misclassified/test``: the most confidently wrong test images, with true and predicted names;
    - ``predictions``: the first images ``predict`` ran on, each with its predicted class and probability (and
      the true class where known and missed);
    - ``train/epoch_time_s`` and ``train/images_per_s`` every epoch;
    - ``curves``: loss and accuracy per epoch, training against validation, when fit ends (every epoch the run's
      logger holds, before a resume too);
    - an HPARAMS entry (the run's hyperparameters with its best and final metrics) when fit or test ends.
    """

    def __init__(self, images: int = 32, misclassified: int = 24, predicted: int = 32) -> None:
        self.images, self.misclassified, self.predicted = images, misclassified, predicted
        # Set by cli.py's --test_after_fit: the run's one HPARAMS entry then waits for the test's metrics
        # (TensorBoard keeps the first entry a run writes).
        self.test_follows_fit = False
        self._inputs_logged = False
        self._fit_metrics: dict[str, float] = {}
        self._wrong: list[tuple[float, Tensor, int, int]] = []
        self._shown: list[tuple[Tensor, int, float, int]] = []

    # ---- helpers -------------------------------------------------------------------------------
    def _draws(self, trainer: L.Trainer) -> bool:
        """Pictures, the graph and the hparams entry are written by one process, into a run folder, not on a dry run."""
        return trainer.is_global_zero and bool(run_dir(trainer)) and not trainer.fast_dev_run

    def _log_picture(self, trainer: L.Trainer, tag: str, pixels: np.ndarray) -> Path:
        """Into TensorBoard, and as a PNG in the run folder (also with the CSV logger), whose path it returns.

        Encoded once, the same PNG bytes for both: TensorBoard's ``add_image`` would convert the pixels to
        float32 (25 MiB at the peak for a 10-class confusion matrix) and encode them again.
        """
        png = io.BytesIO()
        Image.fromarray(pixels).save(png, format="PNG")
        path = Path(run_dir(trainer)) / f"{tag.replace('/', '_')}.png"
        path.write_bytes(png.getvalue())
        if isinstance(trainer.logger, TensorBoardLogger):
            writer = trainer.logger.experiment
            if writer.file_writer is None:  # closed by Lightning as an earlier fit or test ended: add_image reopens it
                writer.add_image(tag, pixels, trainer.global_step, dataformats="HWC")
            else:  # what add_image ends with, given the PNG
                height, width, channels = pixels.shape
                image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png.getvalue())
                writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), trainer.global_step)
        return path

    def _log_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float]) -> None:
        if isinstance(trainer.logger, TensorBoardLogger) and self._draws(trainer):
            params = {k: v for k, v in {**trainer.datamodule.hparams, **pl_module.hparams}.items() if not k.startswith("_")}
            trainer.logger.log_hyperparams(params, metrics)  # without the CLI's internal _class_path, _instantiator

    # ---- training ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The network's graph for TensorBoard's GRAPHS tab: one trace of one blank input, cheap for these nets."""
        shape = pl_module.hparams.get("input_shape")
        if isinstance(trainer.logger, TensorBoardLogger) and shape and self._draws(trainer):
            was_training = pl_module.net.training
            try:
                with warnings.catch_warnings():  # TensorBoard's only graph exporter is torch.jit.trace, deprecated in torch 2.10+
                    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
                    trainer.logger.experiment.add_graph(pl_module.net.eval(), blank_input(pl_module, 1))
            except Exception as exc:  # some networks cannot be traced; the graph is a nicety, not worth a failed run
                print(f"TensorBoard graph skipped: {type(pl_module.net).__name__} could not be traced ({exc}).")
            finally:
                pl_module.net.train(was_training)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Also here: a run resumed in the middle of an epoch does not start that epoch again.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start, self._seen = time.perf_counter(), 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 0 and batch_idx == 0 and not self._inputs_logged and self._draws(trainer):
            self._inputs_logged = True
            images, labels = batch[0][: self.images], batch[1][: self.images]
            shown = undo_normalize(images.float(), trainer.datamodule.transforms)
            captions = [pl_module.class_names[i] for i in labels.tolist()]
            self._log_picture(trainer, "inputs", image_grid(shown, captions))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._seen += len(batch[1])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._epoch_start
        # Under DDP: the slowest process's time, and the images of all processes per second.
        pl_module.log("train/epoch_time_s", seconds, on_epoch=True, sync_dist=True, reduce_fx="max")
        pl_module.log("train/images_per_s", self._seen / seconds, on_epoch=True, prog_bar=True, sync_dist=True, reduce_fx="sum")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and pl_module.latest_confusion.get("val") is not None and self._draws(trainer):
            figure = confusion_matrix_figure(pl_module.latest_confusion["val"], pl_module.class_names)
            self._log_picture(trainer, "confusion_matrix/val", render(figure))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        headline = ("train/loss", "train/acc", "val/loss", "val/acc")
        metrics = {f"final/{k}": float(v) for k, v in trainer.callback_metrics.items() if k in headline}
        if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_score is not None:
            metrics["best/val_acc"] = float(trainer.checkpoint_callback.best_model_score)
        self._fit_metrics = metrics
        if self._draws(trainer) and (history := logged_epochs(trainer)):
            self._log_picture(trainer, "curves", render(curves_figure(history)))
        if not self.test_follows_fit:
            self._log_hparams(trainer, pl_module, metrics)

    # ---- test ----------------------------------------------------------------------------------
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wrong = []

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        confidence, predicted = outputs["logits"].float().softmax(dim=1).max(dim=1)
        wrong = torch.nonzero(predicted != labels).flatten()
        wrong = wrong[confidence[wrong].argsort(descending=True)[: self.misclassified]]  # only this batch's candidates
        for i in wrong.tolist():
            self._wrong.append((float(confidence[i]), images[i].detach().cpu(), int(labels[i]), int(predicted[i])))
        self._wrong = sorted(self._wrong, key=lambda w: -w[0])[: self.misclassified]

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        names = pl_module.class_names
        # Under DDP each process tested its own share: the picture shows the whole set's worst.
        self._wrong = sorted(from_every_process(trainer, self._wrong), key=lambda w: -w[0])[: self.misclassified]
        if pl_module.latest_confusion.get("test") is not None and self._draws(trainer):
            figure = confusion_matrix_figure(pl_module.latest_confusion["test"], names)
            self._log_picture(trainer, "confusion_matrix/test", render(figure))
        if self._wrong and self._draws(trainer):
            images = undo_normalize(torch.stack([w[1] for w in self._wrong]).float(), trainer.datamodule.transforms)
            captions = [f"{names[t]} → {names[p]}\n{c:.0%}" for c, _, t, p in self._wrong]
            self._log_picture(trainer, "misclassified/test", image_grid(images, captions))
        tested = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("test/loss", "test/acc")}
        self._log_hparams(trainer, pl_module, {**self._fit_metrics, **tested})

    # ---- predict -------------------------------------------------------------------------------
    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._shown = []

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        room = self.predicted - len(self._shown)
        if room > 0:
            columns = [outputs[key][:room].tolist() for key in ("predicted", "confidence", "labels")]
            self._shown += list(zip(batch[0][:room].detach().cpu(), *columns))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        shown = from_every_process(trainer, self._shown)[: self.predicted]  # under DDP: each process's first, rank by rank
        if not shown or not self._draws(trainer):
            return
        names = pl_module.class_names
        images = undo_normalize(torch.stack([s[0] for s in shown]).float(), trainer.datamodule.transforms)
        captions = [f"{names[p]} {c:.0%}" + (f"\n(true: {names[t]})" if 0 <= t != p else "") for _, p, c, t in shown]
        path = self._log_picture(trainer, "predictions", image_grid(images, captions))
        which = f"The first {len(shown)}, with their predicted classes" if len(shown) > 1 else "The image, with its predicted class"
        tqdm.write(f"{which}: {path}")  # below the "Wrote ..." line
