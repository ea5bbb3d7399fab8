"""The course's fully connected MNIST nets (784-300-100-10) as one configurable module."""

from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten, then hidden Linear layers, then a Linear head.

    The course's three variants are three configs: plain (``relu: false``), with ReLU, and with
    BatchNorm1d + ReLU (``batch_norm: true``).
    """

    def __init__(
        self,
        num_classes: int,
        in_features: int = 784,
        hidden: tuple[int, ...] = (300, 100),
        relu: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            if relu:
                layers.append(nn.ReLU(inplace=True))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
