"""Augmentation of whole batches on the device, each image with its own random draw."""

import torch
from torch import Tensor, nn
from torchvision.transforms import v2


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


class BatchMix(nn.Module):
    """MixUp and CutMix (torchvision.transforms.v2's) on a training batch, one of them drawn per batch when both are
    on (timm's recipe switches between them half the time). A mixed batch carries its soft targets after the labels,
    ``(images, labels, targets)``: the loss learns from the targets, accuracy counts the images' own labels.
    An alpha of 0 turns that one off; both 0: batches pass unchanged."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        super().__init__()
        mixes = [mix(alpha=alpha, num_classes=num_classes)
                 for mix, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if alpha > 0]
        self.mix = v2.RandomChoice(mixes) if mixes else None

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        if self.mix is None:
            return images, labels
        mixed, targets = self.mix(images, labels)
        return mixed, labels, targets
