"""One LightningDataModule per task, all on the shared base in ``datamodules.base``."""

from datamodules.base import ImageClassificationDataModule
from datamodules.errors import DataError, DataNotFoundError
from datamodules.cats_dogs import CatsDogs
from datamodules.cifar10 import CIFAR10
from datamodules.digits import Digits
from datamodules.face_mask import FaceMask
from datamodules.folder import ImageFolder
from datamodules.food11 import Food11
from datamodules.mnist import MNIST
from datamodules.svhn import SVHN

__all__ = ["CIFAR10", "CatsDogs", "FaceMask", "Food11", "ImageFolder", "MNIST", "SVHN", "DataError", "DataNotFoundError", "Digits", "ImageClassificationDataModule"]
