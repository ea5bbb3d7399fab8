"""One LightningDataModule per task, all on the shared base in ``datamodules.base``."""

from datamodules.base import DataError, DataNotFoundError, ImageClassificationDataModule
from datamodules.cifar10 import CIFAR10
from datamodules.digits import Digits
from datamodules.mnist import MNIST
from datamodules.svhn import SVHN

__all__ = ["CIFAR10", "MNIST", "SVHN", "DataError", "DataNotFoundError", "Digits", "ImageClassificationDataModule"]
