"""The course's Food-11 CNN (HW3): five Conv3x3-BN-ReLU-MaxPool blocks and a three-layer classifier."""

from torch import Tensor, nn


class Food11CNN(nn.Module):
    """Channels 64, 128, 256, 512, 512; at 128x128 input the features are 512x4x4 = 8192 -> 1024 -> 512 -> classes."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 128) -> None:
        super().__init__()
        blocks, channels = [], in_channels
        for out in (64, 128, 256, 512, 512):
            blocks += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*blocks, nn.Flatten())
        side = image_size // 32
        self.classifier = nn.Sequential(
            nn.Linear(512 * side * side, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
