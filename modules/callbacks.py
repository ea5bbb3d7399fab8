"""Project callbacks, where Lightning has none that fits."""

import csv
import math
import os
import re
import shlex
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import callbacks
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from torch.nn.parallel import DistributedDataParallel
from torchinfo import summary
from torchinfo.enums import Units
from tqdm import tqdm


def run_dir(trainer: L.Trainer) -> str | None:
    """The run's log folder, as ``Trainer.log_dir`` gives it but without its broadcast: under DDP
    ``Trainer.log_dir`` is a collective, so code that runs on rank 0 alone would wait on it forever."""
    if not trainer.loggers:
        return trainer.default_root_dir
    logger = trainer.loggers[0]
    return logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir


def next_command(trainer: L.Trainer, subcommand: str, *options: str, new_run: bool = False) -> str:
    """A command to copy for what to run next: with the run's own ``config.yaml`` (every setting it ran with,
    command-line overrides included; LightningCLI writes it into the run folder). ``new_run``: one that starts its
    own run folder, where this fit was a resume, whose config names its checkpoint and pins its run folder."""
    config = Path(run_dir(trainer) or ".") / "config.yaml"
    shown = shlex.quote(str(config)) if config.is_file() else "<this config>"
    if new_run and trainer.ckpt_path is not None:
        fresh = ("--trainer.logger.init_args.version", "null") + (("--ckpt_path", "null") if subcommand == "fit" else ())
        options = (*fresh, *options)
    return " ".join(["python cli.py", subcommand, "--config", shown, *map(shlex.quote, options)])


def where_to_look(trainer: L.Trainer) -> str:
    """How to see what the run logs: TensorBoard for its event files, the CSV file for the CSV logger."""
    logger = trainer.loggers[0] if trainer.loggers else None
    if isinstance(logger, TensorBoardLogger):
        return f"  (watch: tensorboard --logdir {logger.save_dir})"
    return "  (metrics in metrics.csv)" if isinstance(logger, CSVLogger) else ""


@rank_zero_only
def say_where_results_went(trainer: L.Trainer, stage: str) -> None:
    """After a validate or test, below Lightning's table of its numbers: the run folder, with the stage's pictures."""
    folder = run_dir(trainer)
    if not trainer.loggers or trainer.fast_dev_run or not folder:
        return
    pictures = sorted(path.name for path in Path(folder).glob(f"*_{stage}.png"))
    shown = f" ({', '.join(pictures)})" if pictures else ""
    what = "Test" if stage == "test" else "Validation"
    print(f"{what} metrics and pictures: {folder}{shown}{where_to_look(trainer)}")


def last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The run's ``last.ckpt``, where one is written."""
    folders = sorted({Path(c.dirpath) for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)})
    return next((folder / "last.ckpt" for folder in folders if (folder / "last.ckpt").is_file()), None)


def blank_input(pl_module: L.LightningModule, n: int) -> torch.Tensor:
    """``n`` zero images of the network's input shape, dtype (float64, bfloat16... under the "-true" precisions)
    and device: what the summary and the graph trace run the network on."""
    parameter = next(pl_module.net.parameters())
    return torch.zeros(n, *pl_module.hparams["input_shape"], dtype=parameter.dtype, device=parameter.device)


def from_every_process(trainer: L.Trainer, items: list) -> list:
    """``items`` of every process together (each process's share of a split under DDP), on every process."""
    if trainer.world_size == 1:
        return items
    shares = [None] * trainer.world_size
    torch.distributed.all_gather_object(shares, items)
    return [item for share in shares for item in share]


class RunSummary(L.Callback):
    """What a person wants to read in the terminal: at fit start the network's torchinfo summary (layers,
    parameters, MACs, memory) at the task's input size and the data facts (classes, images per split,
    input size, the preprocessing and where each of its settings came from, where logs go); at the end the best
    checkpoint, its validation accuracy, why the run ended and what to run next; on Ctrl+C, what is saved and how
    to resume."""

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth
        self.test_follows_fit = False  # set by cli.py's --test_after_fit
        self.first_step: int | None = None  # the step this fit's loop started from; None: it did not start (a finished run)
        self.stopped_before: list[int] = []  # each EarlyStopping's stopped_epoch as this fit started (a checkpoint's)

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        shape = pl_module.hparams.get("input_shape")
        if shape is not None:
            try:
                # Random, not blank: a network that remembers features (TransferNet's cache_features) may know zeros already.
                images = torch.rand_like(blank_input(pl_module, 2))
                table = str(summary(pl_module.net, input_data=images, depth=self.depth, mode="eval", verbose=0))
                # torchinfo 1.8 formats its unit enum, under Python 3.11+, as "Units.MEGABYTES" instead of its "M".
                print(re.sub(r"\(Units\.(\w+)\)", lambda unit: f"({Units[unit.group(1)].value})", table))
            except Exception as exc:  # the summary is a nicety, not worth a failed run
                print(f"Network summary skipped: torchinfo could not run {type(pl_module.net).__name__} ({exc}).")
        data = trainer.datamodule
        lines = [f"Classes ({len(pl_module.class_names)}): {', '.join(pl_module.class_names)}"]
        for split in ("train_set", "val_set"):
            if hasattr(data, split):
                counts = torch.bincount(getattr(data, split).labels, minlength=len(pl_module.class_names)).tolist()
                lines.append(f"{split[:-4]:>5}: {sum(counts)} images, per class {counts}")
        lines.append(f"Input: {tuple(shape) if shape else '?'} (C, H, W) after transforms")
        if getattr(data, "preprocessing_note", None):  # what the images are made into, and who said so
            lines.append(f"Preprocessing: {data.preprocessing_note}")
        folder = run_dir(trainer)
        if folder:
            lines.append(f"Logs and checkpoints: {folder}{where_to_look(trainer)}")
        print("\n".join(lines))

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = trainer.checkpoint_callback
        if best is None or not best.best_model_path:
            return
        score = f"{float(best.best_model_score):.4f}" if best.best_model_score is not None else "?"
        test = "testing it now (--test_after_fit)"
        if not self.test_follows_fit:
            test = next_command(trainer, "test", "--ckpt_path", best.best_model_path, new_run=True)
        print("\n".join([f"\nBest checkpoint: {best.best_model_path} ({best.monitor} {score})", f"Test it:   {test}",
                         *self._why_it_ended(trainer)]))

    def _why_it_ended(self, trainer: L.Trainer) -> list[str]:
        """Early stopping, or the whole budget used, and then how to train longer: on from last.ckpt with a larger
        budget, or in a new run where the schedule spans the whole run (ClassifierModule refuses to stretch it)."""
        # Lightning restores stopped_epoch from the checkpoint and never clears it: only a change means this fit stopped.
        before = self.stopped_before or [0] * len(trainer.early_stopping_callbacks)
        stopped = [c for c, epoch in zip(trainer.early_stopping_callbacks, before) if c.stopped_epoch != epoch]
        if stopped:
            early = stopped[0]
            return [f"Early stopping ended the run after epoch {early.stopped_epoch}: {early.monitor} had stopped "
                    f"improving (patience {early.patience})."]
        steps = 0 < trainer.max_steps <= trainer.global_step
        if not steps and not 0 < trainer.max_epochs <= trainer.current_epoch:  # max_time, or a callback's stop
            timers = [c for c in trainer.callbacks if isinstance(c, callbacks.Timer) and c.time_remaining() is not None]
            timers = [c for c in timers if c.time_remaining() <= 0]  # a Timer with a duration, used up
            why = "its trainer.max_time used up" if timers else "before its budget"
            more = " --trainer.max_time DD:HH:MM:SS (longer: it counts the time already trained)" if timers else ""
            return [f"Stopped at epoch {trainer.current_epoch}, step {trainer.global_step}, {why}.",
                    f"Resume it: {next_command(trainer, 'fit', '--ckpt_path', str(last_checkpoint(trainer) or 'last'))}{more}"]
        budget, limit = ("max_steps", trainer.max_steps) if steps else ("max_epochs", trainer.max_epochs)
        trained = self.first_step is not None and trainer.global_step > self.first_step
        lines = [] if trained else [f"Nothing to train: the checkpoint had already reached {budget}={limit}."]
        whole_run = [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs if hasattr(c.scheduler, "total_steps")]
        if whole_run:
            lines.append(f"Train longer: {next_command(trainer, 'fit', new_run=True)} --trainer.{budget} N "
                         f"(N above {limit}; a new run, as {whole_run[0]} spans the whole run)")
        else:
            more = f"--trainer.max_epochs N (N above {limit})"
            if steps:  # Lightning resumes a step budget from the end of an epoch wrongly (ClassifierModule refuses it)
                more = (f"--trainer.max_steps -1 --trainer.max_epochs N (N above {trainer.current_epoch}; Lightning resumes "
                        "it counted in epochs only)")
            resume = next_command(trainer, "fit", "--ckpt_path", str(last_checkpoint(trainer) or "last"))
            lines.append(f"Train on:  {resume} {more}")
        return lines

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Read here, not at an epoch's start: a fit resumed part way through an epoch starts none (Lightning goes on
        # with that epoch without calling on_train_epoch_start).
        self.first_step = trainer.global_step
        self.stopped_before = [c.stopped_epoch for c in trainer.early_stopping_callbacks]

    @rank_zero_only
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Ctrl+C during fit (Lightning then exits): what is saved, and how to go on from it."""
        if not isinstance(exception, KeyboardInterrupt) or trainer.state.fn != TrainerFn.FITTING:
            return
        stopped = f"\nStopped by Ctrl+C at epoch {trainer.current_epoch}, step {trainer.global_step}."
        last = last_checkpoint(trainer)
        if last is None:
            print(f"{stopped} No checkpoint was written yet: run the same command again to start over.")
            return
        step = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        print(
            f"{stopped} {last} holds step {step}: resuming repeats {trainer.global_step - step} steps.\n"
            f"Resume it: {next_command(trainer, 'fit', '--ckpt_path', str(last))}"
        )


class ProgressBar(callbacks.TQDMProgressBar):
    """Lightning's tqdm bar, with figures of 1,000 and over as whole numbers: tqdm shortens a float to three
    significant digits, so 3840.5 images a second would read ``3.84e+3``."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | float | str]:
        metrics = super().get_metrics(trainer, pl_module)
        # From 999.5: tqdm would show 999.8 as 1e+3.
        return {k: round(v) if isinstance(v, float) and math.isfinite(v) and abs(v) >= 999.5 else v for k, v in metrics.items()}


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results as a CSV and prints where (``--predictions.output``, ``--predictions.kaggle_format``).

    Columns: ``image`` (the file, or the index in the test split), ``predicted`` (class name),
    ``probability``, and ``true`` where the label is known. ``kaggle_format`` writes ``Id,Category``
    instead: one row per image in file-name order (Food-11's submission). ``output`` defaults to
    ``predictions.csv`` in the run's log folder.
    """

    def __init__(self, output: str | None = None, kaggle_format: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.output, self.kaggle_format = output, kaggle_format

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        # One row per image: (its position in the predicted set, predicted class, probability, true class or -1).
        positions = [i for batch in (batch_indices[0] if batch_indices else []) for i in batch]
        columns = [torch.cat([p[key] for p in predictions]).tolist() for key in ("predicted", "confidence", "labels")]
        rows = list(zip(positions or range(len(columns[0])), *columns))
        rows = sorted(from_every_process(trainer, rows))  # under DDP each process predicted its own share
        if trainer.is_global_zero:
            self._write(trainer, pl_module.class_names, rows)

    @staticmethod
    def csv_path(output: str) -> Path:
        """``output`` itself, or ``predictions.csv`` inside it where it names a folder (an existing one, or ``dir/``)."""
        path = Path(output)
        return path / "predictions.csv" if path.is_dir() or output.endswith(("/", os.sep)) else path

    def _write(self, trainer: L.Trainer, names: list[str], rows: list[tuple[int, int, float, int]]) -> None:
        paths = getattr(trainer.datamodule, "predict_paths", None)
        path = self.csv_path(self.output) if self.output else Path(run_dir(trainer) or ".") / "predictions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            if self.kaggle_format:
                # The Id is the image's place among all the test files, so an unreadable one shifts no other row.
                ids = getattr(trainer.datamodule, "predict_ids", None) or range(len(rows))
                writer.writerow(["Id", "Category"])
                writer.writerows((ids[position], names[predicted]) for position, predicted, _, _ in rows)
                if missing := sorted(set(range(getattr(trainer.datamodule, "predict_file_count", len(rows)))) - set(ids)):
                    tqdm.write(f"The submission has no row for Id {', '.join(map(str, missing))}: those test images could not "
                               "be read (listed above), and Kaggle expects one row per test image. Replace them and predict again.")
            else:
                known = all(label >= 0 for *_, label in rows)
                writer.writerow(["image", "predicted", "probability"] + (["true"] if known else []))
                for position, predicted, probability, label in rows:
                    image = paths[position] if paths else position
                    writer.writerow([image, names[predicted], f"{probability:.4f}", *([names[label]] if known else [])])
        tqdm.write(f"Wrote {len(rows)} prediction{'s' * (len(rows) != 1)} to {path}")  # on a line of its own, below the bar


class BackboneFinetuning(callbacks.BackboneFinetuning):
    """Lightning's BackboneFinetuning, whose frozen phase also honours ``train_bn``, and which works under DDP.

    ``frozen_eval``: the frozen backbone runs in eval mode, BatchNorm frozen too (on its pretrained statistics) and
    dropout off, so the head trains on the features it is evaluated with, and TransferNet's ``cache_features`` can
    remember them.

    Lightning's own freezes with BatchNorm trainable whatever ``train_bn`` says, so those parameters
    sit in the optimizer from the start and again in the group added at the unfreeze epoch.
    A run resumed after the unfreeze epoch gets its backbone's optimizer group back from Lightning but a frozen
    backbone (frozen again at setup), so the backbone would never train again: it is made trainable here.
    DDP synchronises only the parameters that were trainable when it wrapped the model, so after the unfreeze
    each process would train its own backbone (Lightning issue #20340): the model is wrapped again then.
    """

    def __init__(self, *args: Any, frozen_eval: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frozen_eval = frozen_eval

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=self.train_bn and not self.frozen_eval)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        frozen = not all(p.requires_grad for p in pl_module.backbone.parameters())
        if frozen and trainer.current_epoch > self.unfreeze_backbone_at_epoch:  # a run resumed after the unfreeze
            self.make_trainable(pl_module.backbone)
        super().on_train_epoch_start(trainer, pl_module)  # unfreezes at its epoch
        unfrozen_now = frozen and all(p.requires_grad for p in pl_module.backbone.parameters())
        if self.frozen_eval:  # set each epoch: Lightning leaves modes alone, but a summary's train() resets them all
            pl_module.backbone.train(not frozen or unfrozen_now)
        strategy = trainer.strategy
        if unfrozen_now and isinstance(strategy.model, DistributedDataParallel):
            strategy.model = strategy.lightning_module
            strategy.configure_ddp()  # every process at once: DDP also broadcasts rank 0's weights
