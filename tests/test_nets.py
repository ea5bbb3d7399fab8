"""Every network gives one logit per class at its task's input size, with the course's parameter counts."""

import pytest
import torch
from torchinfo import summary

from modules.nets import MLP, SVHNVGG, CIFAR10Net, SmallCNN, SVHNResNet

CASES = [
    (MLP(10, relu=False), (1, 28, 28), 266_610),  # 784-300-100-10, plain
    (MLP(10), (1, 28, 28), 266_610),  # with ReLU (no extra parameters)
    (MLP(10, batch_norm=True), (1, 28, 28), 267_410),  # with BatchNorm1d + ReLU
    (SmallCNN(10), (1, 28, 28), 421_738),
    (CIFAR10Net(10), (3, 32, 32), 145_578),
    (SVHNResNet(10), (3, 28, 28), 2_629_706),  # the course's figure
    (SVHNResNet(10, deep=True), (3, 28, 28), 11_025_994),
    (SVHNVGG(10), (3, 28, 28), 26_818_890),
]


@pytest.mark.parametrize(("net", "shape", "params"), CASES, ids=lambda c: type(c).__name__ if hasattr(c, "forward") else "")
def test_output_shape_and_parameter_count(net, shape, params):
    net.eval()
    assert net(torch.zeros(3, *shape)).shape == (3, 10)
    assert summary(net, input_size=(2, *shape), verbose=0, mode="eval").total_params == params


def test_num_classes_sets_the_head():
    assert SVHNResNet(7)(torch.zeros(2, 3, 28, 28)).shape == (2, 7)
