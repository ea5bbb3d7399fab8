"""The offline quickstart: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)."""

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import Tensor

from datamodules.base import ImageClassificationDataModule


class Digits(ImageClassificationDataModule):
    """The set ships inside scikit-learn, so ``data_dir`` is not read. It has no official test split:
    a fixed, seeded ``test_split`` fraction is held out and never used for training or validation."""

    task = "digits"
    class_names = [str(digit) for digit in range(10)]
    image_shape = (1, 8, 8)
    test_split: float = 0.2

    def expected_files(self) -> list[Path]:
        return []

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        digits = load_digits()
        images = torch.from_numpy(digits.images).mul(255 / 16).round().to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        n_test = round(len(labels) * self.test_split)
        keep = order[:n_test] if split == "test" else order[n_test:]
        return images[keep], labels[keep]
