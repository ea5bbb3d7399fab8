"""Augmentation of whole batches on the device, each image with its own random draw."""

import torch
from torch import Tensor, nn


class BatchAugment(nn.Sequential):
    """Augmentations run in turn on a float batch (N, C, H, W). Batch augmentations (``kornia.augmentation``, what
    the configs use) draw per image themselves and run once on the whole batch; torchvision's transforms draw once
    per call, so they run image by image (slower, same meaning)."""

    def forward(self, x: Tensor) -> Tensor:
        for module in self:
            if type(module).__module__.startswith("torchvision.transforms"):  # one random draw per call
                x = torch.stack([module(image) for image in x])
            else:  # a batch augmentation: its own draw for every image, in one call
                x = module(x)
        return x
