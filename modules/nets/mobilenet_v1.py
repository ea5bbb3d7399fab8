"""MobileNetV1 (Howard et al., 2017): a stem convolution, then depthwise-separable convolutions."""

from torch import Tensor, nn

# (output channels, stride) of the 13 depthwise-separable blocks
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """``width`` scales every layer's channels (the paper's width multiplier alpha)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        channels = int(32 * width)
        layers = [conv_bn_relu(in_channels, channels, 3, 2)]
        for out, stride in BLOCKS:
            out = int(out * width)
            layers += [conv_bn_relu(channels, channels, 3, stride, groups=channels), conv_bn_relu(channels, out, 1, 1)]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
