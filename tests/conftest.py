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


def save_image(path: Path, label: int, size: int = 24, mode: str = "RGB") -> Path:
    """A flat image whose brightness encodes ``label`` (``label_of`` reads it back), in any PIL mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = label * 20 + 10
    image = Image.new("RGB", (size, size), (value, value, value))
    if mode == "CMYK":
        image = image.convert("CMYK")
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return path


def label_of_folder_image(image_float) -> int:
    return int(round((float(image_float.mean()) * 255 - 10) / 20))


@pytest.fixture
def mask_dir(tmp_path: Path) -> Path:
    """The course layout image/{mask,nomask}, with every awkward case a real folder holds."""
    root = tmp_path / "face_mask"
    image = root / "image"
    for i in range(8):
        save_image(image / "mask" / f"m{i}.jpg", 0, size=30 + i)  # varied sizes
        save_image(image / "nomask" / f"n{i}.jpg", 1, size=20 + i)
    save_image(image / "mask" / "gray.png", 0, mode="L")
    save_image(image / "mask" / "alpha.png", 0, mode="RGBA")
    save_image(image / "nomask" / "cmyk.jpg", 1, mode="CMYK")
    save_image(image / "nomask" / "palette.png", 1, mode="P")
    save_image(image / "nomask" / "UPPER.JPG", 1)
    save_image(image / "nomask" / "nested" / "deeper.jpg", 1)
    for i in range(3):  # exact duplicates of one file within a class
        (image / "mask" / f"copy{i}.jpg").write_bytes((image / "mask" / "m0.jpg").read_bytes())
    (image / "nomask" / "across.jpg").write_bytes((image / "mask" / "m1.jpg").read_bytes())  # across classes
    (image / "mask" / ".DS_Store").write_bytes(b"\0\1junk")
    (image / "mask" / "._m0.jpg").write_bytes(b"macOS resource fork")
    (image / "nomask" / "Thumbs.db").write_bytes(b"junk")
    (image / "nomask" / "notes.txt").write_text("not an image")
    (root / "train.txt").write_text("image/mask/m0.jpg 0\n")
    return root


MASK_GOOD = {"mask": 8 + 2 + 3, "nomask": 8 + 4 + 1}  # readable images per class folder


@pytest.fixture
def food11_dir(tmp_path: Path) -> Path:
    root = tmp_path / "food-11"
    for split, per_class in (("training", 3), ("validation", 1)):
        for label in range(11):
            for i in range(per_class):
                save_image(root / split / f"{label}_{i}.jpg", label % 12)
    for i in range(7):
        save_image(root / "test" / f"{i:04d}.jpg", i)
    return root


@pytest.fixture
def catdog_filtered_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cats_and_dogs_filtered"
    for split, n in (("train", 6), ("validation", 2)):
        for label, name in enumerate(("cat", "dog")):
            for i in range(n):
                save_image(root / split / f"{name}s" / f"{name}.{i}.jpg", label, size=40 + i)
    return root


@pytest.fixture
def catdog_kaggle_dir(tmp_path: Path) -> Path:
    root = tmp_path / "dogs-vs-cats"
    for label, name in enumerate(("cat", "dog")):
        for i in range(6):
            save_image(root / "train" / f"{name}.{i}.jpg", label, size=40 + i)
    return root


TINY_MASK = ["--config", str(Path(__file__).resolve().parents[1] / "configs" / "mask.yaml"), "--data.image_size", "32",
             "--data.augment", "[]", "--model.net.width", "0.25", "--trainer.accelerator", "cpu"]  # 32x32, a quarter MobileNet


@pytest.fixture(scope="session")
def tiny_mask_run(tmp_path_factory) -> Path:
    """A face-mask run of one epoch on generated 32x32 photos (``TINY_MASK``), for export and serve: its run folder,
    ``checkpoints/last.ckpt`` inside; the photos are in ``face_mask/image`` beside ``lightning_logs``."""
    import sys

    from cli import main

    root = tmp_path_factory.mktemp("tiny_mask")
    for i in range(8):
        save_image(root / "face_mask" / "image" / "mask" / f"m{i}.jpg", 0, size=30 + i)
        save_image(root / "face_mask" / "image" / "nomask" / f"n{i}.png", 6, size=20 + i)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setattr(sys, "argv", ["cli.py"])
        main(["fit", *TINY_MASK, "--data.data_dir", "face_mask", "--data.batch_size", "4", "--trainer.max_epochs", "1",
              "--trainer.log_every_n_steps", "1"])
    return root / "lightning_logs" / "mask" / "version_0"
