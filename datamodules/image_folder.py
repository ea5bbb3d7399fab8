"""Folders of image files: listing, labelling, decoding once into memory, and a duplicate-aware split.

Every folder dataset uses this: CIFAR-10's folder layout, the face masks, Food-11, cats vs dogs, any
folder a user brings, and ``predict`` on a folder of photos.
"""

import hashlib
import io
import re
import warnings
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from datamodules.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def natural_key(name: str) -> tuple:
    """Sort "2" before "10" (Food-11's classes are numbers), and everything else alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` at any depth, in sorted order; hidden files and folders and non-image
    files (.DS_Store, Thumbs.db, .txt) are left out. Extensions match in any case (.JPG, .Png)."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.is_file()
    )


def label_images(root: Path, filename_pattern: str | None) -> tuple[list[Path], list[str]]:
    """Each image under ``root`` and its class: the top folder it sits in (``root/<class>/…``), or, for a
    flat folder, the first group of ``filename_pattern`` matched against its file name."""
    paths = list_images(root)
    if not paths:
        raise DataError(f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    flat = [p for p in paths if p.parent == root]
    if flat and filename_pattern:
        pattern = re.compile(filename_pattern)
        classes = []
        for path in flat:
            match = pattern.match(path.name)
            if not match:
                raise DataError(f"{path}: file name does not match filename_pattern {filename_pattern!r}, so it has no label.")
            classes.append(match.group(1))
        return flat, classes
    if flat:
        raise DataError(
            f"{root}: {len(flat)} images lie directly in the folder (e.g. {flat[0].name}) instead of in class folders "
            "<class>/<image>. Move them into one folder per class, or set data.filename_pattern to read labels from names."
        )
    class_dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    empty = [d for d in class_dirs if not any(p.is_relative_to(d) for p in paths)]
    if empty:
        raise DataError(f"{empty[0]}: class folder holds no images. Remove it or add its images.")
    return paths, [p.relative_to(root).parts[0] for p in paths]


def load_image(data: bytes, path: Path, mode: str, size: int | None) -> Tensor:
    """Decode with PIL (via bytes already read), upright by EXIF, in ``mode``; resized so the shorter side
    is ``size`` and centre-cropped square, or left at its size when ``size`` is None."""
    if not data:
        raise DataError(f"{path}: empty file (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: too large to decode safely ({exc}).") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image PIL can read.") from exc
    except OSError as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc}).") from exc
    image = ImageOps.exif_transpose(image).convert(mode)
    if size is not None:
        image = F.center_crop(F.resize(image, size), [size, size])
    return F.pil_to_tensor(image)


def read_images(
    paths: list[Path], image_shape: tuple[int, int, int], resize: bool, on_bad_image: str
) -> tuple[Tensor, list[int], list[str], list[str]]:
    """Decode ``paths`` into one uint8 tensor. Returns the tensor, the indices of the paths kept, their
    content hashes, and one line per unreadable file (skipped, or raised when ``on_bad_image`` is 'fail')."""
    channels, height, width = image_shape
    mode = {1: "L", 3: "RGB"}[channels]
    images = torch.empty((len(paths), *image_shape), dtype=torch.uint8)
    kept, hashes, problems = [], [], []
    for i, path in enumerate(tqdm(paths, desc=f"Decoding {paths[0].parent.parent.name}/…" if paths else "", unit="img", mininterval=2.0, leave=False)):
        data = path.read_bytes()
        try:
            image = load_image(data, path, mode, height if resize else None)
            if tuple(image.shape) != image_shape:
                raise DataError(f"{path}: image is {tuple(image.shape)}, expected {image_shape} (C, H, W).")
        except DataError as exc:
            if on_bad_image == "fail":
                raise
            problems.append(str(exc))
            continue
        images[len(kept)] = image
        kept.append(i)
        hashes.append(hashlib.sha1(data).hexdigest())
    return images[: len(kept)], kept, hashes, problems


def read_labelled_folder(
    root: Path,
    class_names: list[str],
    image_shape: tuple[int, int, int],
    filename_pattern: str | None = None,
    resize: bool = True,
    on_bad_image: str = "skip",
) -> tuple[Tensor, Tensor, list[str], list[str]]:
    """Images and labels of one labelled split folder, the files' content hashes, and the unreadable files."""
    paths, names = label_images(root, filename_pattern)
    unknown = sorted(set(names) - set(class_names), key=natural_key)
    if unknown:
        raise DataError(
            f"{root}: classes {unknown} are not among the expected classes {class_names} "
            "(a checkpoint's or the task's). Check the folder, or the checkpoint you are using."
        )
    images, kept, hashes, problems = read_images(paths, image_shape, resize, on_bad_image)
    labels = torch.tensor([class_names.index(names[i]) for i in kept], dtype=torch.long)
    return images, labels, hashes, problems
