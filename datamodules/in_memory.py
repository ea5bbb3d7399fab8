"""A dataset held in memory (or memory-mapped) as one uint8 tensor, checked once, handed out a batch at a time."""

import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.errors import DataError


def checked(images: Tensor, labels: Tensor, image_shape: tuple[int, ...], num_classes: int, where: str) -> tuple[Tensor, Tensor]:
    """What a task read, before it is held: uint8 images of ``image_shape``, one label each, in 0..num_classes-1.
    ``where``: the task, split and folder, for the message."""
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != image_shape:
        raise DataError(f"{where}: images are {images.dtype} {tuple(images.shape[1:])}, expected uint8 {image_shape}.")
    if len(labels) == 0:
        raise DataError(f"{where}: no images (unreadable files, if any, are listed above with why). "
                        "Replace them, or point data_dir at the right folder.")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{where}: labels span {int(labels.min())}..{int(labels.max())}, expected 0..{num_classes - 1}.")
    return images, labels.long()


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and int64 labels held in memory (or memory-mapped), seen through ``index``:
    a split is a set of positions into one shared tensor, never a copy of the images."""

    def __init__(self, images: Tensor, labels: Tensor, index: Tensor | None = None) -> None:
        self.all_images, self.all_labels = images, labels
        self.index = torch.arange(len(labels)) if index is None else index

    @property
    def images(self) -> Tensor:
        return self.all_images[self.index]

    @property
    def labels(self) -> Tensor:
        return self.all_labels[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        row = self.index[i]
        return self.all_images[row], self.all_labels[row]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # The DataLoader asks for a whole batch at once: one tensor index instead of a Python call per image.
        rows = self.index[torch.as_tensor(indices)]
        return self.all_images[rows], self.all_labels[rows]


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for ``InMemoryImages``: its batches arrive already stacked."""
    return batch
