"""SVHN: the cropped-digit ``.mat`` files that ``torchvision.datasets.SVHN`` reads and downloads."""

from pathlib import Path

import torch
from torch import Tensor
from torchvision import datasets

from datamodules.base import ImageClassificationDataModule


class _SVHNFiles(datasets.SVHN):
    """torchvision's SVHN reader (it maps label 10 to digit 0) with its md5s blanked, so it checks that
    the files exist: any file in the official .mat format reads."""

    split_list = {split: [url, name, None] for split, (url, name, _) in datasets.SVHN.split_list.items()}


class SVHN(ImageClassificationDataModule):
    task = "svhn"
    class_names = [str(digit) for digit in range(10)]
    image_shape = (3, 32, 32)
    source = "http://ufldl.stanford.edu/housenumbers/ (train_32x32.mat, test_32x32.mat; torchvision downloads them)"

    def expected_files(self) -> list[Path]:
        return [self.data_dir / "train_32x32.mat", self.data_dir / "test_32x32.mat"]

    def download_files(self) -> None:
        for split in ("train", "test"):
            datasets.SVHN(str(self.data_dir), split=split, download=True)

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        data = _SVHNFiles(str(self.data_dir), split=split)
        return torch.from_numpy(data.data), torch.from_numpy(data.labels).long()
