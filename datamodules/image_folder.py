"""Folders of image files: listing, labelling, decoding once into memory (or a disk cache), skipping unreadable
files and saying so, and each file's content hash, so the split keeps identical files on one side.

Every folder dataset uses this: CIFAR-10's folder layout, the face masks, Food-11, cats vs dogs, any
folder a user brings, and ``predict`` on a folder of photos.
"""

import contextlib
import hashlib
import io
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from filelock import FileLock, Timeout
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from datamodules.errors import DataError, DataNotFoundError, DataWarning
from datamodules.preprocessing import Resize

CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
OnBadImage = Literal["skip", "fail"]  # an unreadable file: left out and listed (report_skipped), or the run stops
MODES = {1: "L", 3: "RGB"}  # channels: the PIL mode every file is converted to


def natural_key(name: str) -> tuple:
    """Sort "2" before "10" (Food-11's classes are numbers), and everything else alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` at any depth, in sorted order; hidden files and folders and non-image
    files (.DS_Store, Thumbs.db, .txt) are left out. Extensions match in any case (.JPG, .Png). Symlinked
    folders are followed (a class folder linked in from elsewhere; ``Path.rglob`` skips them before Python
    3.13), each real folder once, so a link back up the tree ends instead of looping."""
    found, seen = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        paths = (Path(folder, name) for name in files if not name.startswith("."))
        found += [path for path in paths if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    return sorted(found)


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
            f"{root}: {len(flat)} image{'s lie' if len(flat) > 1 else ' lies'} directly in the folder (e.g. {flat[0].name}) "
            "instead of in class folders "
            "<class>/<image>. Move them into one folder per class, or set data.filename_pattern to read labels from names."
        )
    class_dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    empty = [d for d in class_dirs if not any(p.is_relative_to(d) for p in paths)]
    if empty:
        raise DataError(f"{empty[0]}: class folder holds no images. Remove it or add its images.")
    return paths, [p.relative_to(root).parts[0] for p in paths]


def load_image(data: bytes, path: Path, mode: str, size: int | None, resize: Resize = Resize()) -> Tensor:
    """Decode with PIL (via bytes already read), upright by EXIF, in ``mode``; resized as ``resize`` says to a
    ``size`` x ``size`` centre crop, or left at its size when ``size`` is None."""
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
        shorter = math.floor(size / resize.crop_pct)  # as timm's and torchvision's evaluation presets round it
        image = F.resize(image, shorter, interpolation=F.InterpolationMode(resize.interpolation))
        image = F.center_crop(image, [size, size])
    return F.pil_to_tensor(image)


def read_images(
    paths: list[Path], image_shape: tuple[int, int, int], resize: Resize | None, on_bad_image: OnBadImage, out: Tensor | None = None
) -> tuple[Tensor, list[int], list[str], list[str]]:
    """Decode ``paths`` into one uint8 tensor (``out``, e.g. a memory-mapped file, or a new one), resized as
    ``resize`` says (None: the files are of ``image_shape`` already). Returns the filled part, the indices of the
    paths kept, their content hashes, and one line per unreadable file (skipped, or raised when ``on_bad_image`` is
    'fail')."""
    channels, height, _ = image_shape
    mode = MODES[channels]
    images = torch.empty((len(paths), *image_shape), dtype=torch.uint8) if out is None else out
    kept, hashes, problems = [], [], []
    for i, path in enumerate(tqdm(paths, desc=f"Decoding {Path(os.path.commonpath(paths)).name}" if paths else "", unit="img", mininterval=2.0, leave=False)):
        data = path.read_bytes()
        try:
            image = load_image(data, path, mode, height if resize else None, resize or Resize())
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


def report_skipped(problems: list[str], where: Path) -> None:
    """The skip policy for unreadable image files: leave them out, and say which and why."""
    if problems:
        lines = "\n  ".join(problems)
        rank_zero_warn(f"Skipped {len(problems)} unreadable image file(s) in {where}:\n  {lines}", category=DataWarning)


def read_predict_dir(folder: Path, image_shape: tuple[int, int, int], resize: Resize = Resize()) -> tuple[Tensor, list[Path], list[int]]:
    """A folder of image files (any layout), or one image file, to predict on: the readable images resized to
    ``image_shape``, every image file's path, and the positions of those read (unreadable ones are skipped, and said)."""
    if not folder.exists():
        raise DataNotFoundError(
            f"predict_dir {folder}: no such folder or file. Point --data.predict_dir at a folder of images, or one image."
        )
    paths = [folder] if folder.is_file() else list_images(folder)
    if not paths:
        raise DataError(f"predict_dir {folder}: no image files in it.")
    images, kept, _, problems = read_images(paths, image_shape, resize, on_bad_image="skip")
    if not kept:
        raise DataError(f"predict_dir {folder}: none of its {len(paths)} image files could be read:\n  " + "\n  ".join(problems))
    report_skipped(problems, folder)
    return images, paths, kept


def build_cache(entry: Path, paths: list[Path], image_shape: tuple[int, int, int], resize: Resize | None, on_bad_image: OnBadImage) -> None:
    """Decode ``paths`` into ``entry.npy`` (memory-mapped) and ``entry.json`` (kept files, hashes, problems).
    Whole files only: an interrupted build leaves no half cache behind, and a failed one gives its space back."""
    partial = entry.with_suffix(".npy.partial")
    try:
        mapped = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), *image_shape))
        out = torch.from_numpy(mapped)
        _, kept, hashes, problems = read_images(paths, image_shape, resize, on_bad_image, out=out)
        mapped.flush()
        del mapped, out
    except BaseException:  # a full disk, Ctrl+C
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise
    os.replace(partial, entry.with_suffix(".npy"))
    meta = entry.with_suffix(".json")
    meta.with_suffix(".json.partial").write_text(json.dumps({"kept": kept, "hashes": hashes, "problems": problems}))
    os.replace(meta.with_suffix(".json.partial"), meta)


def remove_other_versions(entry: Path) -> None:
    """The caches of this folder for other files or another image size, and what a killed build of one left
    (``.partial``, as large as the cache). One that another run is building now (its lock is held) stays."""
    folder = entry.name.split("-")[0]
    for other in {path.name.split(".")[0] for path in entry.parent.glob(f"{folder}-*")} - {entry.name}:
        try:
            with FileLock(entry.parent / f"{other}.lock", timeout=0):
                for suffix in (".npy", ".json", ".npy.partial", ".json.partial"):
                    (entry.parent / f"{other}{suffix}").unlink(missing_ok=True)
        except Timeout:
            continue


def cached_read_images(
    paths: list[Path], image_shape: tuple[int, int, int], resize: Resize | None, on_bad_image: OnBadImage, cache_dir: Path | None
) -> tuple[Tensor, list[int], list[str], list[str]]:
    """``read_images``, through a disk cache when ``cache_dir`` is set: the decoded images are written once
    into a memory-mapped ``.npy`` and later runs map it instead of decoding. The cache key covers every
    file's path, size and modification time, the target shape and resize: changing any of them rebuilds it."""
    if cache_dir is None:
        return read_images(paths, image_shape, resize, on_bad_image)
    fingerprint = hashlib.sha1(repr((CACHE_VERSION, image_shape, resize)).encode())
    for path in paths:
        stat = path.stat()
        fingerprint.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    folder = hashlib.sha1(str(paths[0].parent.resolve()).encode()).hexdigest()[:10]
    entry = cache_dir.expanduser() / f"{folder}-{fingerprint.hexdigest()[:16]}"
    array, meta = entry.with_suffix(".npy"), entry.with_suffix(".json")
    try:
        array.parent.mkdir(parents=True, exist_ok=True)
        # One builder at a time (two runs at once, DDP machines sharing the folder); the others wait, then map it.
        with FileLock(entry.with_suffix(".lock")):
            if not (array.is_file() and meta.is_file()):
                build_cache(entry, paths, image_shape, resize, on_bad_image)
                remove_other_versions(entry)
            # Mapped under the lock: a build of another image size removes this version once no lock is held.
            info = json.loads(meta.read_text())
            images = torch.from_numpy(np.load(array, mmap_mode="c"))  # copy-on-write: pages load on demand
    except OSError as exc:
        raise DataError(
            f"image cache in {cache_dir}: {exc}. Choose a writable --data.cache_dir with room for the decoded "
            f"images ({len(paths)} x {'x'.join(map(str, image_shape))} bytes), or null to decode into memory."
        ) from exc
    if on_bad_image == "fail" and info["problems"]:  # a cache built under 'skip' left them out
        raise DataError(info["problems"][0])
    return images[: len(info["kept"])], info["kept"], info["hashes"], info["problems"]


def read_labelled_folder(
    root: Path,
    class_names: list[str],
    image_shape: tuple[int, int, int],
    filename_pattern: str | None = None,
    resize: Resize | None = Resize(),
    on_bad_image: OnBadImage = "skip",
    cache_dir: Path | None = None,
) -> tuple[Tensor, Tensor, list[str], list[str]]:
    """Images and labels of one labelled split folder, the files' content hashes, and the unreadable files."""
    paths, names = label_images(root, filename_pattern)
    unknown = sorted(set(names) - set(class_names), key=natural_key)
    if unknown:
        raise DataError(
            f"{root}: classes {unknown} are not among the expected classes {class_names} "
            "(a checkpoint's or the task's). Check the folder, or the checkpoint you are using."
        )
    images, kept, hashes, problems = cached_read_images(paths, image_shape, resize, on_bad_image, cache_dir)
    labels = torch.tensor([class_names.index(names[i]) for i in kept], dtype=torch.long)
    return images, labels, hashes, problems
