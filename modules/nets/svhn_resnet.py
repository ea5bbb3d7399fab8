"""The course's SVHN ResNet, assembled from torchvision's resnet18 stages."""

from torch import Tensor, nn
from torchvision.models import resnet18


class SVHNResNet(nn.Module):
    """3x3 stem (64 channels, BN, ReLU, no max-pool), resnet18's layer2 and layer3, global pool, Linear.

    ``deep: true`` adds resnet18's layer4 (Linear 512 -> classes). At 3x28x28 the default has
    2,629,706 parameters, as in the course.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, deep: bool = False) -> None:
        super().__init__()
        parts = resnet18(weights=None)
        stages = [parts.layer2, parts.layer3] + ([parts.layer4] if deep else [])
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            *stages,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(512 if deep else 256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
