"""Plain ``nn.Module`` networks; each takes ``num_classes`` first, which the ClassifierModule supplies."""

from modules.nets.cifar10_net import CIFAR10Net
from modules.nets.mlp import MLP
from modules.nets.small_cnn import SmallCNN
from modules.nets.svhn_resnet import SVHNResNet
from modules.nets.svhn_vgg import SVHNVGG

__all__ = ["CIFAR10Net", "MLP", "SVHNResNet", "SVHNVGG", "SmallCNN"]
