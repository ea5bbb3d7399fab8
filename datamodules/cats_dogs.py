"""Cats vs dogs: ``cats_and_dogs_filtered`` (``train/`` and ``validation/`` class folders) or Kaggle's flat
``train/cat.0.jpg`` layout, where the name carries the label and validation is split off."""

from datamodules.folder import ImageFolder


class CatsDogs(ImageFolder):
    task = "catdog"
    source = (
        "cats_and_dogs_filtered.zip (TensorFlow's transfer-learning tutorial) or Kaggle's 'Dogs vs. Cats' train.zip"
    )
