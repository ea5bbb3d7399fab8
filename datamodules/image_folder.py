"""Reading a ``<split>/<class>/<image>`` folder tree into one uint8 tensor."""

from pathlib import Path

import torch
from PIL import UnidentifiedImageError
from torch import Tensor
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm import tqdm

from datamodules.base import DataError


def read_image_folder(root: Path, class_names: list[str], image_shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Decode every image under ``root/<class>/`` into memory, once: torchvision lists the files and its
    PIL loader decodes them (any mode becomes RGB; torchvision.io's decoders are deprecated since 0.29)."""
    listing = ImageFolder(str(root), allow_empty=True)
    if listing.classes != list(class_names):
        raise DataError(f"{root}: class folders are {listing.classes}, expected {list(class_names)}.")
    if not listing.samples:
        raise DataError(f"{root}: no images found under its class folders.")
    mode = "RGB" if image_shape[0] == 3 else "L"
    images = torch.empty((len(listing.samples), *image_shape), dtype=torch.uint8)
    for i, (path, _) in enumerate(tqdm(listing.samples, desc=f"Reading {root}", unit="img", mininterval=1.0)):
        try:
            image = pil_to_tensor(default_loader(path).convert(mode))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{path}: cannot be decoded as an image ({exc}). Remove or replace the file.") from exc
        if tuple(image.shape) != image_shape:
            raise DataError(f"{path}: image is {tuple(image.shape)}, expected {image_shape} (C, H, W).")
        images[i] = image
    return images, torch.tensor(listing.targets)
