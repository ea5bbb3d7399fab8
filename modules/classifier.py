"""The one LightningModule every task shares: loss, accuracy, logging, optimizers, predict."""

from typing import Any, Callable, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR, ReduceLROnPlateau
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")
PER_BATCH_SCHEDULERS = (OneCycleLR, CyclicLR)  # their schedules are counted in optimizer steps, not epochs
TOP_K = 5  # top-5 accuracy is logged for tasks with more classes than this


def tta_views(x: Tensor, tta: str) -> tuple[list[Tensor], list[float]]:
    """The views of a batch that test-time augmentation averages the logits of, and their weights (airbench94's):
    the images and their mirror, then (flip_translate) both with their content moved one pixel each way diagonally."""
    if tta == "none":
        return [x], [1.0]
    views = [x, x.flip(-1)]
    if tta == "flip":
        return views, [0.5, 0.5]
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    for shifted in (padded[..., :h, :w], padded[..., 2:, 2:]):
        views += [shifted, shifted.flip(-1)]
    return views, [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]


def averaged_logits(net: Callable[[Tensor], Tensor], images: Tensor, tta: str) -> Tensor:
    """``net``'s logits averaged over the views ``tta`` asks for, in one forward pass; the exported graph computes the
    same (modules/export.py), so a served photo gets what ``predict`` gives it. Any batch size (traced too)."""
    views, weights = tta_views(images, tta)
    if len(views) == 1:  # no TTA: the batch as it is, not a copy of it through cat and a product with 1.0
        return net(images)
    logits = net(torch.cat(views)).unflatten(0, (len(views), -1))
    return torch.einsum("v,vnc->nc", logits.new_tensor(weights), logits)


class ConfigError(ValueError):
    """The model settings cannot work together; the message says which to change."""


def share(part: Tensor, whole: Tensor) -> Tensor:
    """``part / whole``, 0 where ``whole`` is 0 (torchmetrics' convention for a class never seen)."""
    return torch.where(whole > 0, part / whole.clamp(min=1), torch.zeros_like(part))


class ClassifierModule(L.LightningModule):
    """Wraps any plain ``nn.Module`` network with CrossEntropyLoss and multiclass accuracy.

    ``class_names`` and ``input_shape`` arrive from the DataModule (linked in ``cli.py``) and are saved
    in every checkpoint, so a checkpoint alone is enough to predict. ``net`` is called with the number
    of classes, so the count is never typed twice. ``compile`` runs the network through torch.compile
    (off by default: on this project's small CPU nets compiling costs more than it saves). ``tta``: validate, test
    and predict average the logits over mirrored (and shifted) views of each image (``tta_views``).
    """

    def __init__(
        self,
        net: Callable[[int], nn.Module],
        class_names: list[str],
        input_shape: tuple[int, ...] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_monitor: str = "val/loss",
        label_smoothing: float = 0.0,
        channels_last: bool = True,
        compile: bool = False,
        tta: Literal["none", "flip", "flip_translate"] = "none",
    ) -> None:
        super().__init__()
        if scheduler_monitor not in METRICS:
            raise ConfigError(f"scheduler_monitor={scheduler_monitor!r} is not a logged metric; use one of {METRICS}.")
        if not 0 <= label_smoothing <= 1:
            raise ConfigError(f"label_smoothing={label_smoothing}: give a share between 0 (none) and 1.")
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.net = net(self.num_classes)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        n = self.num_classes
        for stage in ("train", "val", "test"):  # epoch means, synchronised across processes by torchmetrics
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_acc", MulticlassAccuracy(n, average="micro"))
        for stage in ("val", "test"):  # the confusion matrix, and the per-class figures read from it
            setattr(self, f"{stage}_confusion", MulticlassConfusionMatrix(n))
            if n > TOP_K:
                setattr(self, f"{stage}_acc_top{TOP_K}", MulticlassAccuracy(n, top_k=TOP_K, average="micro"))
        self.latest_confusion: dict[str, Tensor] = {}  # the last computed matrix per stage, for the pictures
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)

    @property
    def backbone(self) -> nn.Module:
        """The network's pretrained part, for Lightning's ``BackboneFinetuning`` (transfer networks only). Not an
        AttributeError when missing: nn.Module would replace its message with "no attribute 'backbone'"."""
        if not hasattr(self.net, "backbone"):
            raise ConfigError(
                f"{type(self.net).__name__} has no pretrained backbone to freeze, and the config's BackboneFinetuning "
                "callback freezes one: use modules.nets.TransferNet, or a config without that callback."
            )
        return self.net.backbone

    def setup(self, stage: str) -> None:
        # Here, not in configure_model: Lightning's weight averaging warns about sharding for any model that has one.
        if self.hparams.compile and "_compiled" not in self.__dict__:
            # Kept outside the module registry: checkpoints hold the plain network's weights either way.
            self.__dict__["_compiled"] = torch.compile(self.net)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        return self.__dict__.get("_compiled", self.net)(x)

    def evaluate(self, images: Tensor) -> Tensor:
        """The logits outside training: averaged over the test-time augmentation's views, in one forward pass."""
        return averaged_logits(self, images, self.hparams.tta)

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Tensor]:
        # A mixed batch (MixUp, CutMix) brings soft targets for the loss after the labels: accuracy counts the labels.
        images, labels, *soft = batch
        logits = self(images) if stage == "train" else self.evaluate(images)
        loss = self.loss(logits, soft[0] if soft else labels)
        mean_loss, accuracy = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        mean_loss.update(loss.detach(), weight=labels.numel())
        accuracy.update(logits, labels)
        if stage != "train":
            getattr(self, f"{stage}_confusion").update(logits, labels)
            if (top_k := getattr(self, f"{stage}_acc_top{TOP_K}", None)) is not None:
                top_k.update(logits, labels)
        every = self.trainer.log_every_n_steps if stage == "train" else 0  # 0: never
        if every and self.global_step % every == 0:
            # The running loss, for the progress bar and TensorBoard, at the logging cadence.
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return {"loss": loss, "logits": logits.detach()}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")["loss"]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "test")  # the logits feed the misclassified-images picture

    def on_fit_start(self) -> None:
        """Settings that would stop the run part way are refused before it starts."""
        if self.trainer.limit_val_batches == 0:
            callbacks = [c for c in self.trainer.callbacks if str(getattr(c, "monitor", "")).startswith("val/")]
            plateaus = [c for c in self.trainer.lr_scheduler_configs if c.reduce_on_plateau]
            watchers = [f"{type(c).__name__} ({c.monitor})" for c in callbacks]
            watchers += [f"{type(c.scheduler).__name__} ({c.monitor})" for c in plateaus]
            if watchers:
                raise ConfigError(
                    f"validation is off (trainer.limit_val_batches=0), but {', '.join(watchers)} watch validation "
                    "metrics and would stop the run at the first epoch's end. Keep validation on, or turn them off "
                    "(--early_stopping null --checkpoint null; --model.scheduler null)."
                )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A max_steps budget that ends part way through an epoch: Lightning would stop before that epoch's
        # validation, and early stopping, the plateau scheduler and the best checkpoint would find no val/ metric.
        # Asking it to stop here makes it validate first.
        if 0 < self.trainer.max_steps <= self.global_step:
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        self._per_class_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        self._per_class_epoch_end("test")

    def _log_epoch(self, stage: str) -> None:
        """The epoch's loss and accuracy, handed to Lightning once, at its end (Lightning computes and resets the
        metric objects): a self.log every step cost about 1 ms here, 7% of a small CPU network's step."""
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), prog_bar=stage != "train")
        self.log(f"{stage}/acc", getattr(self, f"{stage}_acc"), prog_bar=True)
        if (top_k := getattr(self, f"{stage}_acc_top{TOP_K}", None)) is not None:
            self.log(f"{stage}/acc_top{TOP_K}", top_k)

    def _per_class_epoch_end(self, stage: str) -> None:
        """``<stage>/precision/<class>``, ``recall``, ``f1`` as scalars, read from the confusion matrix (which
        torchmetrics has synchronised across processes); the matrix is kept for the pictures."""
        confusion = getattr(self, f"{stage}_confusion")
        self.latest_confusion[stage] = confusion.compute()
        confusion.reset()
        counts = self.latest_confusion[stage].float()
        hits, predicted, true = counts.diag(), counts.sum(dim=0), counts.sum(dim=1)
        per_class = {"precision": share(hits, predicted), "recall": share(hits, true), "f1": share(2 * hits, predicted + true)}
        for metric, values in per_class.items():
            for name, value in zip(self.class_names, values):
                # Equal on every process already; sync_dist (a mean of equal values) says so to Lightning under DDP.
                self.log(f"{stage}/{metric}/{name}", value, sync_dist=True)

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        probabilities = self.evaluate(batch[0]).float().softmax(dim=1)
        confidence, predicted = probabilities.max(dim=1)
        labels = batch[1] if len(batch) > 1 else torch.full_like(predicted, -1)  # -1: label unknown
        return {"predicted": predicted, "confidence": confidence, "probabilities": probabilities, "labels": labels}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Validate/test/predict need the weights only: the training callbacks' state (best-checkpoint
        # bookkeeping of another run folder, early-stopping counters) would be restored into a new run.
        if self.trainer.state.fn != TrainerFn.FITTING:
            checkpoint.pop("callbacks", None)
            return
        if "current_model_state" in checkpoint and not any(isinstance(c, WeightAveraging) for c in self.trainer.callbacks):
            raise ConfigError(  # Lightning would only warn, and train on from the averaged weights
                "this checkpoint was trained with an EMA of its weights (EMAWeightAveraging in trainer.callbacks) and this "
                "run has none: resume with the run's own config (version_N/config.yaml), or start a new run."
            )
        epoch = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        if self.trainer.max_steps != -1 and epoch and epoch["processed"] > epoch["completed"]:
            # Written as an epoch ended (every checkpoint of a run that its step budget ended): Lightning 2.6 resumes
            # a step-counted run from there as if the epoch were unfinished and runs its end again without its
            # validation, so early stopping fails on the missing val/ metric (Lightning issue #19617).
            raise ConfigError(
                f"this checkpoint was written as epoch {checkpoint['epoch']} ended (step {checkpoint['global_step']}), and "
                "Lightning cannot resume a run counted in steps (trainer.max_steps) from there. Count the rest in epochs: "
                f"--trainer.max_steps -1 --trainer.max_epochs N (N above {epoch['processed']})."
            )
        # A schedule built for the whole run's steps (OneCycleLR's total_steps) is restored as it was; a run
        # longer than that would fail part way ("Tried to step N times"), so it is refused before it starts.
        for state in checkpoint.get("lr_schedulers", []):
            budget = state.get("total_steps")
            if budget is not None and budget < (steps := self.trainer.estimated_stepping_batches):
                raise ConfigError(
                    f"the checkpoint's learning-rate schedule was built for the {budget} steps of the run that wrote "
                    f"it; this run takes {steps:.0f} (max_epochs x steps an epoch, which follow from the training "
                    "images, batch_size, number of processes and accumulate_grad_batches). A schedule over the whole "
                    "run cannot grow part way: resume with the settings it was trained with, or start a new run."
                )

    def configure_optimizers(self) -> Any:
        # Only trainable parameters: a BackboneFinetuning callback adds the frozen backbone later as its own group.
        optimizer = self.optimizer([p for p in self.parameters() if p.requires_grad])
        if self.scheduler is None:
            return optimizer
        # Schedulers that need the whole run's step budget (OneCycleLR) get it from the trainer and step per batch.
        needs_budget = getattr(self.scheduler, "keywords", {}).get("total_steps", 0) is None
        if needs_budget:
            steps = self.trainer.estimated_stepping_batches
            if steps == float("inf"):
                raise ConfigError(
                    "model.scheduler plans its learning rates over the whole run's steps, and this run has no end "
                    "(trainer.max_epochs -1 and no max_steps). Give --trainer.max_epochs N or --trainer.max_steps N, or "
                    "train until early stopping with another scheduler (--model.scheduler null, or ReduceLROnPlateau)."
                )
            scheduler = self.scheduler(optimizer, total_steps=int(steps))
        else:
            scheduler = self.scheduler(optimizer)
        per_batch = needs_budget or isinstance(scheduler, PER_BATCH_SCHEDULERS)
        budget = getattr(scheduler, "total_steps", None)
        if per_batch and budget is not None and budget < (steps := self.trainer.estimated_stepping_batches) != float("inf"):
            length = "trainer.max_steps" if self.trainer.max_steps == steps else "max_epochs x steps an epoch"
            raise ConfigError(
                f"model.scheduler plans {budget} steps and this run takes {steps:.0f} ({length}): it would fail part way. "
                "Leave out total_steps (and epochs, steps_per_epoch): the run's own budget is filled in, or give "
                f"--trainer.max_steps {budget}."
            )
        if isinstance(scheduler, ReduceLROnPlateau):
            wants_max = self.hparams.scheduler_monitor.endswith("acc")
            if wants_max != (scheduler.mode == "max"):
                raise ConfigError(
                    f"ReduceLROnPlateau has mode={scheduler.mode!r} but watches {self.hparams.scheduler_monitor!r}: "
                    f"give --model.scheduler.mode {'max' if wants_max else 'min'} (init_args.mode in a YAML file)."
                )
        config = {"scheduler": scheduler, "interval": "step" if per_batch else "epoch"}
        if isinstance(scheduler, ReduceLROnPlateau):
            # Stepped after the epochs that validate (trainer.check_val_every_n_epoch), when its metric exists.
            config["frequency"] = self.trainer.check_val_every_n_epoch or 1
        # Lightning raises if the monitored metric is missing, so a plateau scheduler is never silently inert.
        config["monitor"] = self.hparams.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}
