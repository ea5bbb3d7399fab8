"""MNIST: the IDX files that ``torchvision.datasets.MNIST`` reads and downloads."""

from pathlib import Path

from torch import Tensor
from torchvision import datasets

from datamodules.base import ImageClassificationDataModule


class MNIST(ImageClassificationDataModule):
    task = "mnist"
    class_names = [str(digit) for digit in range(10)]
    image_shape = (1, 28, 28)
    source = "http://yann.lecun.com/exdb/mnist/ (torchvision downloads it with download: true)"
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def expected_files(self) -> list[Path]:
        return [self.data_dir / "MNIST" / "raw" / name for name in self.files]

    def download_files(self) -> None:
        for train in (True, False):
            datasets.MNIST(str(self.data_dir), train=train, download=True)

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        data = datasets.MNIST(str(self.data_dir), train=split == "train")
        return data.data.unsqueeze(1), data.targets
