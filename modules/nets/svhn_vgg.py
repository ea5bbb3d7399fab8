"""The course's VGG-style SVHN network: VGG16's first conv blocks, one more conv block, a 4096-wide head."""

from torch import Tensor, nn
from torchvision.models import vgg16


class SVHNVGG(nn.Module):
    """VGG16 blocks 1-2 (64, 128 channels), Conv 128->256 + ReLU + pool, then 4096-4096-classes.

    ``image_size`` (square input side) fixes the width of the first Linear layer.
    """

    def __init__(
        self, num_classes: int, image_size: int = 28, hidden: int = 4096, dropout: float = 0.5
    ) -> None:
        super().__init__()
        vgg_blocks_1_2 = vgg16(weights=None).features[:10]
        self.features = nn.Sequential(
            vgg_blocks_1_2,
            nn.Conv2d(128, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
