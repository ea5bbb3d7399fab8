"""CIFAR-10: the official python pickles, or the image-folder layout many mirrors ship."""

from pathlib import Path

import torch
from torch import Tensor
from torchvision import datasets

from datamodules.base import ImageClassificationDataModule
from datamodules.image_folder import read_labelled_folder


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader with its md5s blanked, so it checks that the files exist: any copy in
    the official pickle format reads (the md5s only match the one official archive)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class CIFAR10(ImageClassificationDataModule):
    """Reads ``data_dir/cifar-10-batches-py/`` if present, else ``data_dir/{train,test}/<class>/*.png|jpg``."""

    task = "cifar10"
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    image_shape = (3, 32, 32)
    source = ("https://www.cs.toronto.edu/~kriz/cifar.html (torchvision downloads it with download: true), or as image "
              "folders train/<class>/ and test/<class>/ (Kaggle and mirrors)")
    pickles = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]

    @property
    def is_folder_layout(self) -> bool:
        return not (self.data_dir / "cifar-10-batches-py").exists() and (self.data_dir / "train").is_dir()

    def expected_files(self) -> list[Path]:
        pickles, folders = self.layouts()
        return [self.data_dir / path for path in (folders if self.is_folder_layout else pickles)]

    def layouts(self) -> list[list[Path]]:
        folders = [Path(split, name) for split in ("train", "test") for name in self.class_names]
        return [[Path("cifar-10-batches-py", name) for name in self.pickles], folders]

    def download_files(self) -> None:
        datasets.CIFAR10(str(self.data_dir), download=True)

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        if self.is_folder_layout:
            images, labels, _, _ = read_labelled_folder(
                self.data_dir / split, self.class_names, self.image_shape, resize=None, on_bad_image="fail"
            )
            return images, labels
        data = _CIFAR10Files(str(self.data_dir), train=split == "train")
        return torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(data.targets)
