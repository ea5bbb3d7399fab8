"""Tiny datasets written in each dataset's real on-disk format.

Every image is filled with ``label * 20`` (plus a little noise), so a test can read the label back
from the pixels and check that images and labels travel together.
"""

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

N_TRAIN, N_TEST = 40, 20
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images of ``shape`` whose pixels encode their label, every class present."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    noise = rng.integers(0, 4, size=(n, *shape))
    images = (labels.reshape(-1, *[1] * len(shape)) * 20 + noise).astype(np.uint8)
    return images, labels


def label_of(image_float) -> int:
    """Invert ``make_images`` for an image scaled to [0, 1] (before any normalisation)."""
    return int(round(float(image_float.mean()) * 255 / 20))


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", N_TRAIN, 0), ("t10k", N_TEST, 1)):
        images, labels = make_images(n, (28, 28), seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return tmp_path / "mnist"


@pytest.fixture
def cifar_pickle_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(batches):
        images, labels = make_images(N_TRAIN // 5 if name != "test_batch" else N_TEST, (3, 32, 32), seed)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.reshape(len(images), -1), "labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES}, f)
    return tmp_path / "cifar"


@pytest.fixture
def cifar_folder_dir(tmp_path: Path) -> Path:
    root = tmp_path / "CIFAR-10-images"
    for split, n, seed, ext in (("train", N_TRAIN, 0, "png"), ("test", N_TEST, 1, "png")):
        images, labels = make_images(n, (32, 32, 3), seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / CIFAR_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}.{ext}")
    return root


@pytest.fixture
def svhn_dir(tmp_path: Path) -> Path:
    root = tmp_path / "svhn"
    root.mkdir()
    for split, n, seed in (("train", N_TRAIN, 0), ("test", N_TEST, 1)):
        images, labels = make_images(n, (32, 32, 3), seed)
        # The .mat layout: X is (32, 32, 3, N); y is (N, 1) with digit 0 stored as 10.
        y = np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": y})
    return root
