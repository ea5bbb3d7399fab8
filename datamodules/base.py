"""The DataModule every task shares: it checks the files, splits, loads, and turns batches into network input.

A task reads its files once into one uint8 tensor (N, C, H, W) and a label tensor. Loaders hand out
uint8 batches by indexing those tensors; the batch becomes float, is augmented and normalised only
after Lightning has moved it to the device (``on_after_batch_transfer``). No per-sample PIL work.
What it uses but does not own lives beside it: ``data_files`` (what is wrong with the files on disk),
``in_memory`` (the dataset), ``split`` (the validation split), ``loading`` (samplers, the resumable loader),
``augment`` (batch augmentation).
"""

from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar

import lightning as L
import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveInt
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from datamodules.augment import BatchAugment, BatchMix
from datamodules.data_files import refuse_a_misplaced_data_dir, refuse_missing_files, unreadable
from datamodules.errors import DataError
from datamodules.image_folder import MODES, load_image, read_predict_dir
from datamodules.in_memory import InMemoryImages, checked, keep_batch
from datamodules.loading import EpochSampler, EvaluationShare, ResumableLoader
from datamodules.preprocessing import Resize, described, resolve
from datamodules.split import grouped_split, refuse_another_split


class ImageClassificationDataModule(L.LightningDataModule):
    """Base for every task; a task sets the class attributes and implements the file hooks.

    ``augment`` runs in training only, on each image with its own random draw (``BatchAugment``).
    ``transforms`` runs on whole batches in every stage. Both receive float images scaled to [0, 1], as
    ``ToTensor`` gives. ``mixup_alpha``, ``cutmix_alpha``: MixUp, CutMix (or one of the two per batch) on training
    batches after ``transforms``; 0 turns each off (``BatchMix``). ``mean`` and ``std`` normalise after
    ``transforms``; null: the pretrained weights', no normalisation without them. ``pretrained``: what the network's
    pretrained weights expect of the images (mean, std, size, crop, interpolation), filled in from ``model.net`` by
    cli.py, not a setting: set those themselves.
    ``val_split``: a fraction of the training images (0 < f < 1), or a whole number of them, held out for validation
    when the dataset ships no validation set. ``num_workers``: 0 loads in the training process, the fast path for
    sets held in memory.
    ``predict_dir``: a folder of image files (any layout), or one image file, to predict on instead of the test split.
    """

    task: ClassVar[str]
    class_names: list[str]
    image_shape: ClassVar[tuple[int, int, int]]  # (C, H, W) as stored, before transforms
    source: ClassVar[str] = ""  # where to get the data, for the error message
    resize: Resize = Resize()  # how image files are resized (predict_dir; folder tasks set their own)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 64,
        # OpenUnitInterval first: LightningCLI keeps the parser's dump of these as hparams, and jsonargparse dumps a
        # union by its first type that takes the value (with PositiveInt first, 0.25 would become 0).
        val_split: OpenUnitInterval | PositiveInt = 0.1,
        seed: int = 42,
        download: bool = True,
        num_workers: NonNegativeInt = 0,
        augment: list[nn.Module] | None = None,
        transforms: list[nn.Module] | None = None,
        predict_dir: str | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        pretrained: dict[str, Any] | None = None,
        mixup_alpha: NonNegativeFloat = 0.0,
        cutmix_alpha: NonNegativeFloat = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augment", "transforms"])
        self.data_dir = Path(data_dir).expanduser()
        self.augment = BatchAugment(*(augment or []))
        values, sources = resolve({"mean": mean, "std": std}, pretrained)
        self.preprocessing = getattr(self, "preprocessing", {}) | values  # a folder task's decoding first
        self.preprocessing_sources = getattr(self, "preprocessing_sources", {}) | sources
        self.transforms = nn.Sequential(*(transforms or []), *self._normalize(values["mean"], values["std"]))
        self.input_shape = tuple(self.transforms(torch.zeros(1, *self.image_shape)).shape[1:])
        self.mix: BatchMix | None = None  # MixUp/CutMix, built by setup("fit") once the class count is known
        self.held_out: dict[str, Any] | None = None  # how validation was drawn from the training images, or that it was not

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def preprocessing_note(self) -> str | None:
        """The preprocessing settings and where each came from (config, pretrained weights); None if all are defaults."""
        sources = self.preprocessing_sources
        return described(self.preprocessing, sources) if set(sources.values()) - {"default"} else None

    def _normalize(self, mean: list[float] | None, std: list[float] | None) -> list[nn.Module]:
        if mean is None and std is None:
            return []
        channels = self.image_shape[0]
        if mean is None or std is None or len(mean) not in (1, channels) or len(std) not in (1, channels):
            raise DataError(f"{self.task}: mean {mean} and std {std} ({self.preprocessing_sources['mean']}, "
                            f"{self.preprocessing_sources['std']}) do not fit {channels}-channel images: give both, "
                            f"with {channels} value(s) each (--data.mean, --data.std).")
        return [v2.Normalize(mean, std)]

    # ---- what a task implements -------------------------------------------------------------
    def expected_files(self) -> list[Path]:
        """The files that must exist before ``load`` can read the data."""
        raise NotImplementedError

    def download_files(self) -> None:
        """Fetch the files into ``data_dir`` (tasks without a download leave this as it is)."""

    def load(self, split: str) -> tuple[Tensor, Tensor] | None:
        """Read ``split`` ('train' or 'test') as uint8 images (N, C, H, W) and int64 labels.
        None for 'test' means the set has no labelled test split: testing uses the validation split."""
        raise NotImplementedError

    def load_validation(self) -> tuple[Tensor, Tensor] | None:
        """A validation set the dataset ships; None carves one from the training set (``val_split``)."""
        return None

    def default_predict_dir(self) -> Path | None:
        """The folder ``predict`` reads when ``predict_dir`` is not set; None predicts on the test split."""
        return None

    def file_keys(self, n: int) -> list[str] | None:
        """One key per training image; images with equal keys (identical files) stay on one side of the split.
        None: no two training images are the same file."""
        return None

    def layouts(self) -> list[list[Path]]:
        """What a data_dir holds in each layout the task reads, relative to it: where to look for the files when
        data_dir misses them by a level."""
        expected = self.expected_files()
        if not expected or not all(path.is_relative_to(self.data_dir) for path in expected):
            return []  # nothing expected, or some of it elsewhere (a test_dir of its own)
        return [[path.relative_to(self.data_dir) for path in expected]]

    # ---- the files ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download on one process if files are missing; stop with a clear message if that fails."""
        if self.predicting_a_folder():
            return
        error = None
        if self.missing_files() and self.hparams.download:
            refuse_a_misplaced_data_dir(self.task, self.data_dir, self.layouts())
            try:
                self.download_files()
            except Exception as exc:  # no network, a moved mirror...: report it with the missing files
                error = exc
        self._check_files(error)

    def missing_files(self) -> list[Path]:
        return [path for path in self.expected_files() if not path.exists()]

    def _check_files(self, download_error: Exception | None = None) -> None:
        refuse_missing_files(self.task, self.data_dir, self.missing_files(), self.layouts(), self.source, download_error)

    # ---- the splits --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "predict" and self.predicting_a_folder():
            self._setup_predict_folder()
            return
        self._check_files()
        if stage == "fit":
            self._check_augment_size()
            self.mix = BatchMix(self.num_classes, self.hparams.mixup_alpha, self.hparams.cutmix_alpha)
        if stage in ("fit", "validate") and not hasattr(self, "train_set"):
            self._setup_train_and_validation()
        if stage in ("test", "predict") and not hasattr(self, "test_set"):
            loaded = self._loaded("test")
            if loaded is None:
                rank_zero_only(print)(f"{self.task}: no labelled test split; test and predict use the validation split.")
                self.setup("validate")  # the splits, without training's checks
                self.test_set = self.val_set
            else:
                self.test_set = InMemoryImages(*loaded)

    def _setup_train_and_validation(self) -> None:
        images, labels = self._loaded("train")
        shipped = self._loaded("validation")
        if shipped is not None:
            self.held_out = {"validation_folder": True}  # every training image trains
            self.train_set = InMemoryImages(images, labels)
            self.val_set = InMemoryImages(*shipped)
        else:
            split, seed = self.hparams.val_split, self.hparams.seed
            train, val = grouped_split(labels, self.file_keys(len(labels)), split, seed)
            self.held_out = {"val_split": split, "seed": seed, "pool": len(labels), "validation": len(val)}
            if len(train) == 0:
                raise DataError(
                    f"{self.task}: val_split={split} takes all {len(labels)} training images for "
                    "validation. Leave some for training: a fraction below 1, or fewer images."
                )
            self.train_set = InMemoryImages(images, labels, train)
            self.val_set = InMemoryImages(images, labels, val)
        # A seeded mixed order, not class by class as folders list them: validation limited to its first batches
        # (trainer.limit_val_batches) then sees every class, instead of one and an accuracy of 0 or 1.
        mixed = torch.randperm(len(self.val_set), generator=torch.Generator().manual_seed(self.hparams.seed))
        self.val_set.index = self.val_set.index[mixed]

    def _loaded(self, split: str) -> tuple[Tensor, Tensor] | None:
        """``load`` (or ``load_validation``), checked; a file no reader can take (a download cut short, another
        format) is reported with the task's files and how to get them again, instead of the reader's traceback."""
        try:
            loaded = self.load_validation() if split == "validation" else self.load(split)
        except (DataError, MemoryError):
            raise
        except Exception as exc:  # each reader (torchvision's, pickle, scipy's .mat) fails its own way
            raise unreadable(self.task, split, self.data_dir, self.expected_files(), self.source, exc) from exc
        where = f"{self.task} {split} data in {self.data_dir}"
        return None if loaded is None else checked(*loaded, self.image_shape, self.num_classes, where)

    def _check_augment_size(self) -> None:
        """Training only: validate, test and predict never run augment (a config's crop may not fit another size there)."""
        shape = self.input_shape
        trained_on = tuple(self.transforms(self.augment(torch.zeros(1, *self.image_shape))).shape[1:])
        if trained_on != shape:
            raise DataError(
                f"augment turns {self.task} images into {trained_on} but evaluation images are {shape}: give augment's "
                f"crop or resize the evaluation size, {shape[-2]}x{shape[-1]} (in the config's data.augment; folder sets "
                "read images at data.image_size), or add a crop or resize to `transforms` so both reach the network "
                "at the same size."
            )

    # ---- the predict folder ------------------------------------------------------------------
    def predicting_a_folder(self) -> bool:
        return self.trainer is not None and self.trainer.predicting and self.predict_folder() is not None

    def predict_folder(self) -> Path | None:
        return Path(self.hparams.predict_dir).expanduser() if self.hparams.predict_dir else self.default_predict_dir()

    def _setup_predict_folder(self) -> None:
        images, paths, kept = read_predict_dir(self.predict_folder(), self.image_shape, self.resize)
        self.predict_paths = [str(paths[i]) for i in kept]
        # Each image's place among all the folder's image files, unreadable ones included (Kaggle's Id).
        self.predict_ids, self.predict_file_count = list(kept), len(paths)
        self.predict_set = InMemoryImages(images, torch.full((len(kept),), -1))

    def file_reader(self, facts: dict[str, Any] | None = None) -> Callable[[bytes, str], Tensor]:
        """How an image file's bytes become one of this data's uint8 images (the server's uploads): decoded, upright by
        EXIF, in its channels, resized and centre-cropped as its folders' files are, so a photo served and the same
        photo predicted from a folder get the same probabilities. ``facts``: an exported file's, in place of the data's."""
        facts = facts or {}
        channels, size, _ = facts.get("input_shape") or self.image_shape
        resize = Resize(facts.get("crop_pct", self.resize.crop_pct), facts.get("interpolation", self.resize.interpolation))
        return partial(load_image, mode=MODES[channels], size=size, resize=resize)

    # ---- what a checkpoint keeps -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Kept in every checkpoint: how validation was drawn from the training images, or that it came from a folder."""
        return {"held_out": self.held_out} if self.held_out else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint evaluated, or trained on, with validation drawn another way would be judged on images it
        trained on: refused (``refuse_another_split``). Only where this run validates, or tests on validation."""
        saved, now = state.get("held_out"), self.held_out
        stage = self.trainer.state.fn if self.trainer is not None else None
        tests_on_validation = getattr(self, "test_set", None) is getattr(self, "val_set", 0)
        if saved and now and (stage in (TrainerFn.FITTING, TrainerFn.VALIDATING) or tests_on_validation):
            refuse_another_split(saved, now)

    # ---- the loaders -------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        sampler = EpochSampler(self.train_set, self.hparams.seed, *self._processes())  # Lightning sets its epoch
        # A last batch of one image would stop BatchNorm in training ("Expected more than 1 value per channel").
        drop_last = len(sampler) % self.hparams.batch_size == 1
        return self._loader(
            self.train_set, ResumableLoader, sampler=sampler, drop_last=drop_last, trained_batches=self._trained_batches
        )

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_set, "validation")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.test_set, "test")

    def predict_dataloader(self) -> DataLoader:
        if hasattr(self, "predict_set"):
            return self._evaluation_loader(self.predict_set, "predict_dir")
        return self._evaluation_loader(self.test_set, "test")

    def _trained_batches(self) -> tuple[int, int]:
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return self.trainer.current_epoch, progress.processed

    def _evaluation_loader(self, dataset: InMemoryImages, split: str) -> DataLoader:
        """Under DDP each process evaluates its own share, every image exactly once, so the synchronised metrics
        equal one process's. (Lightning's default sampler would pad the last share with repeated images, counted
        twice; shares that differ by one image are safe here, as evaluation makes no collective call per batch.)"""
        processes, rank = self._processes()
        if processes == 1:
            return self._loader(dataset)
        if len(dataset) < processes:
            raise DataError(
                f"{self.task}: the {split} set has {len(dataset)} image(s), fewer than the {processes} processes, and "
                "every process needs at least one. Use fewer devices (--trainer.devices) or a larger set."
            )
        return self._loader(dataset, sampler=EvaluationShare(dataset, processes, rank))

    def _processes(self) -> tuple[int, int]:
        """(number of processes, this one's rank): each takes its own share of every split under DDP."""
        return (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)

    def _loader(self, dataset: InMemoryImages, loader: type[DataLoader] = DataLoader, **extra: Any) -> DataLoader:
        workers = self.hparams.num_workers
        return loader(
            dataset,
            batch_size=self.hparams.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator),
            collate_fn=keep_batch,
            **extra,
        )

    # ---- on the device -----------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, ...]:
        """(images, labels) ready for the network; a training batch that MixUp or CutMix mixed also carries its soft
        targets, (images, labels, targets)."""
        images, labels = batch
        x = images.float().div_(255)
        if self.trainer is None:
            return self.transforms(x), labels
        if not self.trainer.training:  # Lightning converts a batch to the precision's dtype (64-true...) before this hook
            return self.trainer.precision_plugin.convert_input(self.transforms(x)), labels  # when it is uint8
        x = self.transforms(self.augment(x))
        images, *labels_and_targets = self.mix(x, labels) if self.mix is not None else (x, labels)
        return self.trainer.precision_plugin.convert_input(images), *labels_and_targets
