"""A small fast residual-free CNN for 32x32 images, after Keller Jordan's airbench94 (94% on CIFAR-10 in 3.8 s on
an A100: https://github.com/KellerJordan/cifar10-airbench, legacy/airbench94.py). What makes it fast to train, kept
here: a frozen first layer that whitens 2x2 patches (its weights computed from the first training batch), three
Conv-Pool-BN-GELU-Conv-BN-GELU groups with identity-initialised convolutions, BatchNorm without scales and with
biases that learn 64x faster, and logits scaled by 1/9."""

import torch
import torch.distributed as dist
from torch import Tensor, nn


class Conv(nn.Conv2d):
    """A bias-free 3x3 convolution whose first input channels start as the identity (Dirac): the group begins
    by passing its input through, which trains faster than a random start."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[: self.in_channels])


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm without a learnt scale, whose bias learns ``bias_scale**2`` times faster than the other weights under
    SGD: the bias is stored divided by ``bias_scale``. airbench gives its BatchNorm biases a 64x learning rate in an
    optimizer group of their own; this reparametrisation gives the same updates, weight decay included, with the
    one optimizer every config builds from ``model.parameters()``."""

    def __init__(self, channels: int, momentum: float, bias_scale: float = 8.0) -> None:
        super().__init__(channels, eps=1e-12, momentum=momentum, affine=False)
        self.bias_scale = bias_scale
        self.scaled_bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + (self.scaled_bias * self.bias_scale).view(1, -1, 1, 1)


class ConvGroup(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, momentum: float) -> None:
        super().__init__(
            Conv(in_channels, out_channels), nn.MaxPool2d(2), BatchNorm(out_channels, momentum), nn.GELU(),
            Conv(out_channels, out_channels), BatchNorm(out_channels, momentum), nn.GELU(),
        )


class Whitening(nn.Conv2d):
    """A frozen 2x2 convolution that decorrelates image patches (their covariance's eigenvectors, each with its
    negative), set from the first batch it sees in training. ``ready`` is in the checkpoint, so a resumed or
    evaluated network keeps the weights it trained with; under DDP every process uses the mean covariance."""

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4) -> None:
        super().__init__(in_channels, 2 * in_channels * kernel_size**2, kernel_size, bias=True)
        self.weight.requires_grad_(False)
        self.eps = eps
        self.register_buffer("ready", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not self.ready:
            self.fit(x.detach())
        return super().forward(x)

    @torch.no_grad()
    def fit(self, images: Tensor) -> None:
        """In float32 whatever the run's precision (eigh takes no bf16). Under DDP the covariance is every process's
        mean and rank 0's result is broadcast: eigenvectors' signs may differ between processes' solvers."""
        with torch.autocast(images.device.type, enabled=False):
            c, (h, w) = images.shape[1], self.kernel_size
            patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
            covariance = patches.T @ patches / len(patches)
            distributed = dist.is_available() and dist.is_initialized()
            if distributed:
                dist.all_reduce(covariance)
                covariance /= dist.get_world_size()
            values, vectors = torch.linalg.eigh(covariance)
            values, vectors = values.flip(0).view(-1, 1, 1, 1), vectors.T.reshape(-1, c, h, w).flip(0)
            scaled = vectors / torch.sqrt(values + self.eps)
            self.weight.copy_(torch.cat((scaled, -scaled)).to(self.weight))
            if distributed:
                dist.broadcast(self.weight, 0)
        self.ready.fill_(True)


class AirbenchNet(nn.Module):
    """``widths``: the three groups' channels, airbench94's (64, 256, 256); (32, 128, 128) trains 3.1x faster on a
    2-core CPU. ``batchnorm_momentum``: airbench's 0.6 in its convention, 0.4 in PyTorch's."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (64, 256, 256),
        batchnorm_momentum: float = 0.4,
        logit_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        self.whiten = Whitening(in_channels)
        groups, width = [], self.whiten.out_channels
        for out in widths:
            groups.append(ConvGroup(width, out, batchnorm_momentum))
            width = out
        self.features = nn.Sequential(self.whiten, nn.GELU(), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)) * self.logit_scale
