"""The course's CIFAR-10 network: three 5x5 conv + max-pool blocks and two Linear layers."""

from torch import Tensor, nn


class CIFAR10Net(nn.Module):
    """Conv(3->32)-pool, Conv(32->32)-pool, Conv(32->64)-pool, Linear 1024->64->classes.

    The course network has no activations between layers (``relu: false``, its default here, keeps
    it faithful); ``relu: true`` adds a ReLU after every conv and the hidden Linear.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, relu: bool = False) -> None:
        super().__init__()

        def act() -> nn.Module:
            return nn.ReLU(inplace=True) if relu else nn.Identity()

        self.model = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), act(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, padding=2), act(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), act(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 64), act(),
            nn.Linear(64, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
