"""What every task shares: finding the files, the validation split, loaders and batch transforms.

A task reads its files once into one uint8 tensor (N, C, H, W) and a label tensor. Loaders hand out
uint8 batches by indexing those tensors; the batch becomes float, is augmented and normalised only
after Lightning has moved it to the device (``on_after_batch_transfer``). No per-sample PIL work.
"""

from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


class DataError(ValueError):
    """The data on disk, or the data settings, cannot be used; the message says where and how to fix it."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The dataset's files are not where the config says, and could not be downloaded."""


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and int64 labels held in memory."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # The DataLoader asks for a whole batch at once: one tensor index instead of a Python call per image.
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for ``InMemoryImages``: its batches arrive already stacked."""
    return batch


class ImageClassificationDataModule(L.LightningDataModule):
    """Base for every task; a task sets the class attributes and implements the file hooks.

    ``augment`` runs in training only, on each image with its own random draw; ``transforms`` runs
    on whole batches in every stage. Both receive float images scaled to [0, 1], as ``ToTensor`` gives.
    """

    task: ClassVar[str]
    class_names: list[str]
    image_shape: ClassVar[tuple[int, int, int]]  # (C, H, W) as stored, before transforms
    source: ClassVar[str] = ""  # where to get the data, for the error message

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_split: float = 0.1,
        seed: int = 42,
        download: bool = True,
        num_workers: int = 0,
        augment: list[nn.Module] | None = None,
        transforms: list[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not 0 < val_split < 1:
            raise DataError(f"val_split={val_split} must lie strictly between 0 and 1 (a fraction of the training set).")
        self.save_hyperparameters(ignore=["augment", "transforms"])
        self.data_dir = Path(data_dir).expanduser()
        self.augment = nn.Sequential(*(augment or []))
        self.transforms = nn.Sequential(*(transforms or []))
        self.input_shape = self._input_shape()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ---- what a task implements -------------------------------------------------------------
    def expected_files(self) -> list[Path]:
        """The files that must exist before ``load`` can read the data."""
        raise NotImplementedError

    def download_files(self) -> None:
        """Fetch the files into ``data_dir`` (tasks without a download leave this as it is)."""

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        """Read ``split`` ('train' or 'test') as uint8 images (N, C, H, W) and int64 labels."""
        raise NotImplementedError

    # ---- shared behaviour --------------------------------------------------------------------
    def _input_shape(self) -> tuple[int, ...]:
        blank = torch.zeros(self.image_shape)
        shape = tuple(self.transforms(blank).shape)
        trained_on = tuple(self.transforms(self.augment(blank)).shape)
        if trained_on != shape:
            raise DataError(
                f"augment turns {self.task} images into {trained_on} but evaluation images are {shape}: "
                "add a crop or resize to `transforms` so both reach the network at the same size."
            )
        return shape

    def missing_files(self) -> list[Path]:
        return [path for path in self.expected_files() if not path.exists()]

    def _check_files(self, download_error: Exception | None = None) -> None:
        missing = self.missing_files()
        if not missing:
            return
        listing = "\n".join(f"  {path}" for path in missing)
        why = f"\nDownloading failed: {download_error}" if download_error else ""
        where = f"\nGet the data from {self.source}" if self.source else ""
        raise DataNotFoundError(
            f"{self.task}: data not found in {self.data_dir.resolve()}. Missing:\n{listing}{why}{where}\n"
            "Put the files there, or point to them with --data.data_dir PATH."
        )

    def prepare_data(self) -> None:
        """Download on one process if files are missing; stop with a clear message if that fails."""
        error = None
        if self.missing_files() and self.hparams.download:
            try:
                self.download_files()
            except Exception as exc:  # no network, a moved mirror...: report it with the missing files
                error = exc
        self._check_files(error)

    def setup(self, stage: str) -> None:
        self._check_files()
        if stage in ("fit", "validate") and not hasattr(self, "train_set"):
            images, labels = self._checked(*self.load("train"), split="train")
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.hparams.seed))
            n_val = max(1, round(len(labels) * self.hparams.val_split))
            self.val_set = InMemoryImages(images[order[:n_val]], labels[order[:n_val]])
            self.train_set = InMemoryImages(images[order[n_val:]], labels[order[n_val:]])
        if stage in ("test", "predict") and not hasattr(self, "test_set"):
            self.test_set = InMemoryImages(*self._checked(*self.load("test"), split="test"))

    def _checked(self, images: Tensor, labels: Tensor, split: str) -> tuple[Tensor, Tensor]:
        where = f"{self.task} {split} data in {self.data_dir}"
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != self.image_shape:
            raise DataError(f"{where}: images are {images.dtype} {tuple(images.shape[1:])}, expected uint8 {self.image_shape}.")
        if len(images) != len(labels) or len(labels) == 0:
            raise DataError(f"{where}: {len(images)} images but {len(labels)} labels.")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(f"{where}: labels span {int(labels.min())}..{int(labels.max())}, expected 0..{self.num_classes - 1}.")
        return images, labels.long()

    def _loader(self, dataset: InMemoryImages, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.trainer is not None and self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator",
            collate_fn=keep_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        x = images.float().div_(255)
        if self.trainer is not None and self.trainer.training and len(self.augment):
            x = torch.stack([self.augment(image) for image in x])
        return self.transforms(x), labels
